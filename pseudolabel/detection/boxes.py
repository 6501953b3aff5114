"""Geometric transforms of normalised xyxy boxes, for pre-tokenization's crops, resizes and flips.

Boxes are (N, 4) float arrays ``(x0, y0, x1, y1)`` in [0, 1] of the image they were detected on. A resize
of the whole image leaves normalised boxes unchanged; a crop re-normalises them to the crop rectangle and
clips; a horizontal flip mirrors x. These commute with running the detector on the transformed image (up
to the detector's own error), which tests/pseudolabel_detect/test_boxes.py checks.
"""

from __future__ import annotations

import numpy as np

from fourm_core.structured import Box, Detections

Rect = tuple[float, float, float, float]  # (x0, y0, x1, y1)


def to_pixels(xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N, 4) normalised -> (N, 4) pixel coordinates (continuous, pixel edges at integers)."""
    return np.asarray(xyxy, dtype=np.float64) * np.array([width, height, width, height], dtype=np.float64)


def to_normalised(xyxy_px: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N, 4) pixel coordinates -> (N, 4) normalised (not clipped)."""
    return np.asarray(xyxy_px, dtype=np.float64) / np.array([width, height, width, height], dtype=np.float64)


def pixel_rect_to_normalised(rect_px: Rect, width: int, height: int) -> Rect:
    """A crop given in pixels of a ``width x height`` image -> the same crop in normalised coordinates."""
    x0, y0, x1, y1 = rect_px
    return (x0 / width, y0 / height, x1 / width, y1 / height)


def crop_boxes(xyxy: np.ndarray, crop: Rect, min_visible: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Re-express boxes in a crop's normalised frame.

    xyxy: (N, 4) normalised to the source image; crop: (x0, y0, x1, y1) normalised to the source image.
    Returns ((K, 4) boxes normalised to the crop and clipped to [0, 1], (N,) bool mask of kept boxes).
    A box is kept when its clipped area is > 0 and at least ``min_visible`` of its original area.
    """
    b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    cx0, cy0, cx1, cy1 = crop
    cw, ch = cx1 - cx0, cy1 - cy0
    if cw <= 0 or ch <= 0:
        raise ValueError(f"empty crop {crop}")
    moved = (b - np.array([cx0, cy0, cx0, cy0])) / np.array([cw, ch, cw, ch])
    clipped = np.clip(moved, 0.0, 1.0)
    area = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
    vis = np.maximum(clipped[:, 2] - clipped[:, 0], 0) * np.maximum(clipped[:, 3] - clipped[:, 1], 0)
    keep = (vis > 0) & (vis >= min_visible * area)
    return clipped[keep], keep


def hflip_boxes(xyxy: np.ndarray) -> np.ndarray:
    """(N, 4) normalised boxes of an image -> the same boxes in the horizontally mirrored image."""
    b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    return np.stack([1.0 - b[:, 2], b[:, 1], 1.0 - b[:, 0], b[:, 3]], axis=1)


def transform_detections(dets: Detections, crop: Rect | None = None, hflip: bool = False,
                         min_visible: float = 0.0) -> Detections:
    """Apply ``crop`` (normalised rect of the source) then ``hflip`` to every box; drops boxes that leave the
    crop. Class names and scores are kept; the order of the surviving boxes is kept."""
    if not dets.boxes:
        return dets
    xyxy = np.array([b.xyxy for b in dets.boxes], dtype=np.float64)
    keep = np.ones(len(xyxy), dtype=bool)
    if crop is not None:
        xyxy, keep = crop_boxes(xyxy, crop, min_visible)
    if hflip:
        xyxy = hflip_boxes(xyxy)
    kept = [b for b, k in zip(dets.boxes, keep) if k]
    return Detections(boxes=[Box(xyxy=tuple(x), class_name=b.class_name, score=b.score)
                             for b, x in zip(kept, xyxy.tolist())])
