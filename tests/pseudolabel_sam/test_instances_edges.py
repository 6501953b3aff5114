"""SAM labeler core: stored masks round-trip; SAM edges = Canny on the rendered instance map."""

from __future__ import annotations

import cv2
import numpy as np

from pseudolabel.sam.edges import CANNY_HIGH, CANNY_LOW, render_instance_map, sam_edges
from pseudolabel.sam.fast_amg import AmgSettings
from pseudolabel.sam.instances import decode_mask, encode_mask, label_image

SETTINGS = AmgSettings(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.6,
                       stability_score_offset=0.5, box_nms_thresh=1.0)


def test_rle_round_trip_random_and_edge_cases():
    rng = np.random.default_rng(0)
    for mask in (rng.random((37, 53)) > 0.5, np.zeros((5, 7), bool), np.ones((5, 7), bool)):
        rle = encode_mask(mask)
        assert isinstance(rle["counts"], str) and rle["size"] == list(mask.shape)
        np.testing.assert_array_equal(decode_mask(rle), mask)


def test_label_image_instances_round_trip(tiny_sam, test_images):
    image = test_images["shapes"]
    result = label_image(tiny_sam, image, SETTINGS)
    assert result.n_instances == len(result.instances) > 0
    assert result.image_size == image.shape[:2] == result.mask_size
    for inst in result.instances:
        mask = decode_mask(inst.rle)
        assert mask.shape == image.shape[:2] and int(mask.sum()) == inst.area
        ys, xs = np.nonzero(mask)
        assert inst.bbox == (xs.min(), ys.min(), xs.max(), ys.max())
        assert 0.0 <= inst.stability_score <= 1.0
        np.testing.assert_array_equal(decode_mask(encode_mask(mask)), mask)
    # Edges are Canny on the instance map rendered from the stored masks.
    masks = np.stack([decode_mask(i.rle) for i in result.instances])
    np.testing.assert_array_equal(result.edges, cv2.Canny(render_instance_map(masks), CANNY_LOW, CANNY_HIGH))


def test_low_resolution_labels(tiny_sam, test_images):
    image = test_images["coffee"]  # 192 x 256
    result = label_image(tiny_sam, image, AmgSettings(**{**SETTINGS.__dict__, "output_size": 64}))
    assert result.mask_size == (48, 64) and result.edges.shape == (48, 64)
    for inst in result.instances:  # boxes come back in original pixels
        assert 0 <= inst.bbox[0] <= inst.bbox[2] <= 256 and 0 <= inst.bbox[1] <= inst.bbox[3] <= 192


def test_render_paints_small_instances_on_top():
    big = np.zeros((40, 40), bool)
    big[5:35, 5:35] = True
    small = np.zeros((40, 40), bool)
    small[15:20, 15:20] = True
    inst = render_instance_map(np.stack([small, big]))
    assert inst[17, 17] != inst[8, 8] and inst[8, 8] != 0 and inst[0, 0] == 0


def test_sam_edges_lie_on_instance_boundaries():
    a = np.zeros((64, 64), bool)
    a[10:40, 10:40] = True
    b = np.zeros((64, 64), bool)
    b[30:55, 25:60] = True
    inst = render_instance_map(np.stack([a, b]))
    edges = sam_edges(inst)
    np.testing.assert_array_equal(edges, cv2.Canny(inst, CANNY_LOW, CANNY_HIGH))
    assert edges.any()
    # Every edge pixel is next to an id change; inside an instance (away from borders) there is none.
    grad = np.zeros_like(inst, bool)
    grad[:-1] |= inst[:-1] != inst[1:]
    grad[1:] |= inst[:-1] != inst[1:]
    grad[:, :-1] |= inst[:, :-1] != inst[:, 1:]
    grad[:, 1:] |= inst[:, :-1] != inst[:, 1:]
    near = cv2.dilate(grad.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert np.all(near[edges > 0])
    assert not edges[15:25, 15:25].any()
    # Most boundary pixels are marked.
    assert (edges > 0)[grad].mean() > 0.4
    # Empty instance map -> no edges.
    assert not sam_edges(render_instance_map(np.zeros((0, 8, 8), bool))).any()
