"""The fast generator agrees with segment_anything's SamAutomaticMaskGenerator on the same weights."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from segment_anything import SamAutomaticMaskGenerator

from pseudolabel.sam.agreement import agreement
from pseudolabel.sam.fast_amg import AmgSettings, FastMaskGenerator, masks_to_boxes, point_grid
from segment_anything.utils.amg import batched_mask_to_box, build_point_grid

# Equal settings for both generators. Random-weight SAMs give low predicted IoUs and large masks
# whose boxes mostly coincide: the IoU filter is off, the stability filter is on at a smaller
# offset, and box NMS at 1.0 removes nothing (torchvision drops IoU > thresh), so dozens of
# masks survive and every filter stage is compared. A second setting runs the real NMS.
MANY = AmgSettings(points_per_side=12, pred_iou_thresh=0.0, stability_score_thresh=0.6,
                   stability_score_offset=0.5, box_nms_thresh=1.0)
NMS = AmgSettings(points_per_side=12, pred_iou_thresh=0.1, stability_score_thresh=0.5,
                  stability_score_offset=0.5, box_nms_thresh=0.7)


def _reference(model, image, settings: AmgSettings) -> tuple[np.ndarray, np.ndarray]:
    anns = SamAutomaticMaskGenerator(model, **settings.reference_kwargs()).generate(image)
    masks = np.stack([a["segmentation"] for a in anns]) if anns else np.zeros((0,) + image.shape[:2], bool)
    return masks, np.array([a["predicted_iou"] for a in anns])


@pytest.mark.parametrize("name", ["astronaut", "coffee", "shapes"])
def test_agreement_at_equal_settings(tiny_sam, test_images, name):
    image = test_images[name]
    ref, ref_iou = _reference(tiny_sam, image, MANY)
    fast = FastMaskGenerator(tiny_sam, MANY).generate(image)
    assert len(ref) >= 24, "settings must leave dozens of masks to compare"
    # The tiny model is not degenerate: surviving masks differ from each other.
    assert len({m.tobytes() for m in ref}) >= len(ref) // 2
    frac, miou = agreement(ref, fast.masks.numpy())
    print(f"{name}: reference {len(ref)} masks, fast {len(fast)}; matched {frac:.4f}, mean IoU {miou:.4f}")
    assert frac >= 0.9 and miou >= 0.9
    assert abs(len(fast) - len(ref)) <= max(1, len(ref) // 20)
    # Same ordering by predicted IoU (NMS order) up to float noise.
    n = min(len(ref), len(fast))
    np.testing.assert_allclose(np.sort(fast.iou_preds.numpy())[::-1][:n], np.sort(ref_iou)[::-1][:n], atol=1e-4)


def test_agreement_with_box_nms(tiny_sam, test_images):
    for image in test_images.values():
        ref, _ = _reference(tiny_sam, image, NMS)
        fast = FastMaskGenerator(tiny_sam, NMS).generate(image)
        frac, miou = agreement(ref, fast.masks.numpy())
        assert len(fast) == len(ref)
        assert frac >= 0.9 and miou >= 0.9


def test_low_resolution_mode_agrees_with_downsampled_reference(tiny_sam, test_images):
    image = test_images["coffee"]
    ref, _ = _reference(tiny_sam, image, MANY)
    low = AmgSettings(**{**MANY.__dict__, "output_size": 128})
    fast = FastMaskGenerator(tiny_sam, low).generate(image)
    h, w = fast.masks.shape[1:]
    assert max(h, w) == 128 and fast.scale == pytest.approx(128 / 256)
    ref_small = np.stack([cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0 for m in ref])
    frac, miou = agreement(ref_small, fast.masks.numpy())
    assert len(ref) >= 24 and frac >= 0.9 and miou >= 0.9


def test_point_grid_and_boxes_match_reference_helpers():
    np.testing.assert_allclose(point_grid(7), build_point_grid(7))
    rng = np.random.default_rng(0)
    masks = torch.as_tensor(rng.random((5, 9, 11)) > 0.9)
    masks[2] = False  # empty mask -> zero box in both
    np.testing.assert_array_equal(masks_to_boxes(masks).numpy(), batched_mask_to_box(masks).float().numpy())


def test_banded_upsample_equals_postprocess_masks():
    """The banded separable resize equals Sam.postprocess_masks' two bilinear interpolations."""
    import torch.nn.functional as F

    from pseudolabel.sam.fast_amg import BandedResize, resize_operator

    low = torch.randn(5, 64, 64, generator=torch.Generator().manual_seed(0))
    in_h, in_w, out_h, out_w = 192, 256, 181, 241  # input frame 256², padded; odd original size
    ref = F.interpolate(low[:, None], (256, 256), mode="bilinear", align_corners=False)[..., :in_h, :in_w]
    ref = F.interpolate(ref, (out_h, out_w), mode="bilinear", align_corners=False)[:, 0]
    ry, rx = (BandedResize(resize_operator(64, 256, in_h, out_h), block=16),
              BandedResize(resize_operator(64, 256, in_w, out_w), block=16))
    out = FastMaskGenerator._upsample(low, ry, rx)  # (out_w, out_h, n)
    torch.testing.assert_close(out.permute(2, 1, 0), ref, atol=1e-5, rtol=1e-5)
