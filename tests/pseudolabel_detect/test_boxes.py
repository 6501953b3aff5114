"""Boxes survive resize / crop / flip consistently: transforming the boxes found on an image equals finding
the boxes on the transformed image. The "detector" here is exact (bounding boxes of coloured rectangles),
so any disagreement is the transform's fault; the image ops are the ones pre-tokenization uses (cv2)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pseudolabel.detection import crop_boxes, hflip_boxes, transform_detections
from pseudolabel.detection.boxes import pixel_rect_to_normalised, to_normalised, to_pixels
from tokenize_stage.text.serialise import det
from fourm_core.structured import Box, Detections

COLOURS = {"dog": (255, 0, 0), "cat": (0, 255, 0), "car": (0, 0, 255)}
RECTS_PX = {"dog": (40, 30, 120, 90), "cat": (150, 100, 230, 170), "car": (10, 150, 60, 230)}  # x0,y0,x1,y1 excl.


def scene(w: int = 256, h: int = 240) -> np.ndarray:
    im = np.full((h, w, 3), 128, np.uint8)
    for name, (x0, y0, x1, y1) in RECTS_PX.items():
        im[y0:y1, x0:x1] = COLOURS[name]
    return im


def oracle(im: np.ndarray) -> Detections:
    """Exact detector: the normalised bounding box of each colour's pixels (pixel edges)."""
    h, w = im.shape[:2]
    boxes = []
    for name, c in COLOURS.items():
        ys, xs = np.nonzero(np.all(np.abs(im.astype(int) - c) < 60, axis=2))
        if len(xs):
            boxes.append(Box(xyxy=(xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h),
                             class_name=name, score=1.0))
    return Detections(boxes=boxes)


def by_name(d: Detections) -> dict[str, tuple[float, ...]]:
    return {b.class_name: b.xyxy for b in d.boxes}


def assert_close(a: Detections, b: Detections, tol: float) -> None:
    assert by_name(a).keys() == by_name(b).keys()
    for k, box in by_name(a).items():
        assert box == pytest.approx(by_name(b)[k], abs=tol), k


def test_resize_keeps_normalised_boxes():
    im = scene()
    resized = cv2.resize(im, (224, 224), interpolation=cv2.INTER_NEAREST)
    assert_close(oracle(resized), oracle(im), tol=1.5 / 224)


@pytest.mark.parametrize("crop_px", [(30, 20, 200, 200), (100, 60, 256, 240), (0, 0, 128, 120)])
@pytest.mark.parametrize("flip", [False, True])
def test_crop_resize_flip_commute_with_detection(crop_px, flip):
    im = scene()
    h, w = im.shape[:2]
    x0, y0, x1, y1 = crop_px
    out = cv2.resize(im[y0:y1, x0:x1], (224, 224), interpolation=cv2.INTER_NEAREST)
    if flip:
        out = out[:, ::-1]
    expected = transform_detections(oracle(im), crop=pixel_rect_to_normalised(crop_px, w, h), hflip=flip)
    assert_close(oracle(np.ascontiguousarray(out)), expected, tol=1.5 / 224)
    # and the transformed boxes serialise (all coordinates inside [0, 1], ordered)
    det.parse(det.serialise(expected))


def test_crop_drops_boxes_outside_and_respects_min_visible():
    xyxy = np.array([[0.1, 0.1, 0.2, 0.2], [0.45, 0.45, 0.7, 0.7], [0.8, 0.8, 0.9, 0.9]])
    kept, keep = crop_boxes(xyxy, (0.5, 0.5, 1.0, 1.0))
    assert keep.tolist() == [False, True, True]
    assert kept[0] == pytest.approx([0.0, 0.0, 0.4, 0.4])
    assert kept[1] == pytest.approx([0.6, 0.6, 0.8, 0.8])
    _, keep = crop_boxes(xyxy, (0.5, 0.5, 1.0, 1.0), min_visible=0.7)  # box 1 has 0.2^2/0.25^2 = 64 % inside
    assert keep.tolist() == [False, False, True]


def test_flip_twice_is_identity_and_pixels_round_trip():
    xyxy = np.array([[0.1, 0.2, 0.4, 0.9]])
    assert hflip_boxes(xyxy) == pytest.approx(np.array([[0.6, 0.2, 0.9, 0.9]]))
    assert hflip_boxes(hflip_boxes(xyxy)) == pytest.approx(xyxy)
    assert to_normalised(to_pixels(xyxy, 640, 480), 640, 480) == pytest.approx(xyxy)


def test_transform_empty_detections():
    assert transform_detections(Detections(), crop=(0.1, 0.1, 0.5, 0.5), hflip=True) == Detections()
