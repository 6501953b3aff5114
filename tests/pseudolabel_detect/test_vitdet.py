"""ViTDet-H Cascade Mask R-CNN: detectron2's released names and shapes load strictly, the box math matches
torchvision's, and a detectron2-format checkpoint converts into a detector that computes what it was built from."""

import pickle

import numpy as np
import pytest
import torch

from pseudolabel.detection import detect, load_detector
from pseudolabel.detection.families import build_config
from pseudolabel.detection.vitdet import (ViTDetForObjectDetection, apply_deltas, base_anchors, grid_anchors,
                                          pool_boxes)
from pseudolabel.detection.vitdet_convert import convert_state_dict, released_to_ours

from .conftest import small


def _released_shapes(d=1280, depth=32, heads=16, window=14, c=256, fc=1024, classes=80) -> dict[str, tuple]:
    """detectron2's COCO cascade_mask_rcnn_vitdet_h_75ep state dict, name -> shape, from its published config
    (ViT-H/16 at 1024² with MAE's 224² position table, global attention in blocks 7/15/23/31, simple feature pyramid
    with LayerNorm, 2-conv RPN with 3 anchors, 3 cascade stages of 4conv1fc heads, 4conv mask head)."""
    s = {"backbone.net.pos_embed": (1, (224 // 16) ** 2 + 1, d), "backbone.net.patch_embed.proj.weight": (d, 3, 16, 16),
         "backbone.net.patch_embed.proj.bias": (d,)}
    for i in range(depth):
        b, rel = f"backbone.net.blocks.{i}.", 2 * (window if i % 8 != 7 else 1024 // 16) - 1
        s |= {b + "norm1.weight": (d,), b + "norm1.bias": (d,), b + "attn.qkv.weight": (3 * d, d),
              b + "attn.qkv.bias": (3 * d,), b + "attn.rel_pos_h": (rel, d // heads), b + "attn.rel_pos_w": (rel, d // heads),
              b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,), b + "norm2.weight": (d,), b + "norm2.bias": (d,),
              b + "mlp.fc1.weight": (4 * d, d), b + "mlp.fc1.bias": (4 * d,), b + "mlp.fc2.weight": (d, 4 * d),
              b + "mlp.fc2.bias": (d,)}

    def conv_ln(name, cin, k):
        return {name + ".weight": (c, cin, k, k), name + ".norm.weight": (c,), name + ".norm.bias": (c,)}

    s |= {"backbone.simfp_2.0.weight": (d, d // 2, 2, 2), "backbone.simfp_2.0.bias": (d // 2,),
          "backbone.simfp_2.1.weight": (d // 2,), "backbone.simfp_2.1.bias": (d // 2,),
          "backbone.simfp_2.3.weight": (d // 2, d // 4, 2, 2), "backbone.simfp_2.3.bias": (d // 4,),
          **conv_ln("backbone.simfp_2.4", d // 4, 1), **conv_ln("backbone.simfp_2.5", c, 3),
          "backbone.simfp_3.0.weight": (d, d // 2, 2, 2), "backbone.simfp_3.0.bias": (d // 2,),
          **conv_ln("backbone.simfp_3.1", d // 2, 1), **conv_ln("backbone.simfp_3.2", c, 3),
          **conv_ln("backbone.simfp_4.0", d, 1), **conv_ln("backbone.simfp_4.1", c, 3),
          **conv_ln("backbone.simfp_5.1", d, 1), **conv_ln("backbone.simfp_5.2", c, 3)}
    r = "proposal_generator.rpn_head."
    s |= {r + "conv.conv0.weight": (c, c, 3, 3), r + "conv.conv0.bias": (c,), r + "conv.conv1.weight": (c, c, 3, 3),
          r + "conv.conv1.bias": (c,), r + "objectness_logits.weight": (3, c, 1, 1), r + "objectness_logits.bias": (3,),
          r + "anchor_deltas.weight": (12, c, 1, 1), r + "anchor_deltas.bias": (12,)}
    for k in range(3):
        for j in range(1, 5):
            s |= conv_ln(f"roi_heads.box_head.{k}.conv{j}", c, 3)
        s |= {f"roi_heads.box_head.{k}.fc1.weight": (fc, c * 49), f"roi_heads.box_head.{k}.fc1.bias": (fc,),
              f"roi_heads.box_predictor.{k}.cls_score.weight": (classes + 1, fc),
              f"roi_heads.box_predictor.{k}.cls_score.bias": (classes + 1,),
              f"roi_heads.box_predictor.{k}.bbox_pred.weight": (4, fc), f"roi_heads.box_predictor.{k}.bbox_pred.bias": (4,)}
    for j in range(1, 5):
        s |= conv_ln(f"roi_heads.mask_head.mask_fcn{j}", c, 3)
    s |= {"roi_heads.mask_head.deconv.weight": (c, c, 2, 2), "roi_heads.mask_head.deconv.bias": (c,),
          "roi_heads.mask_head.predictor.weight": (classes, c, 1, 1), "roi_heads.mask_head.predictor.bias": (classes,)}
    return s


def test_released_vitdet_h_cascade_loads_strictly_at_full_size():
    released = _released_shapes()
    state = convert_state_dict({k: torch.empty(v, device="meta") for k, v in released.items()})
    with torch.device("meta"):
        ours = ViTDetForObjectDetection(build_config("vitdet", "full")).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in ours.items()}
    assert sum(v.numel() for v in ours.values()) == pytest.approx(691.5e6, rel=1e-3)
    assert released_to_ours("pixel_mean") is None
    with pytest.raises(KeyError, match="backbone.net.bogus"):
        released_to_ours("backbone.net.bogus")


def test_box_decoding_matches_torchvision():
    from torchvision.models.detection._utils import BoxCoder

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 200
    boxes = torch.cat([xy, xy + 1 + torch.rand(50, 2, generator=g) * 100], 1)
    deltas = torch.randn(50, 4, generator=g)
    deltas[0, 2:] = 10.0  # past the scale clamp
    for w in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (30.0, 30.0, 15.0, 15.0)]:
        want = BoxCoder(w).decode_single(deltas, boxes)
        assert torch.allclose(apply_deltas(deltas, boxes, w), want, atol=1e-4)


def test_anchors_follow_the_rpn_output_order():
    base = base_anchors(32, [0.5, 1.0, 2.0])
    assert torch.allclose((base[:, 2] - base[:, 0]) * (base[:, 3] - base[:, 1]), torch.full((3,), 1024.0))
    assert torch.allclose((base[:, 3] - base[:, 1]) / (base[:, 2] - base[:, 0]), torch.tensor([0.5, 1.0, 2.0]))
    a = grid_anchors(2, 3, 8, base)  # (y, x, anchor) order
    y, x, k = 1, 2, 1
    assert torch.allclose(a[(y * 3 + x) * 3 + k], base[k] + torch.tensor([x * 8, y * 8, x * 8, y * 8.0]))


def test_boxes_are_pooled_on_their_fpn_level():
    """A 224-pixel box is read from p4, a 56-pixel one from p2 (ROIAlignV2 of that level's map)."""
    from torchvision.ops import roi_align

    feats = [torch.randn(1, 2, 64 // 2 ** i, 64 // 2 ** i) for i in range(4)]  # p2..p5 of a 256² image
    big, small_box = torch.tensor([[10.0, 10.0, 234.0, 234.0]]), torch.tensor([[5.0, 5.0, 61.0, 61.0]])
    got = pool_boxes(feats, [torch.cat([big, small_box])], 7)
    want_big = roi_align(feats[2], torch.cat([torch.zeros(1, 1), big], 1), 7, 1 / 16, 0, True)
    want_small = roi_align(feats[0], torch.cat([torch.zeros(1, 1), small_box], 1), 7, 1 / 4, 0, True)
    assert torch.equal(got[0], want_big[0]) and torch.equal(got[1], want_small[0])


def _detectron2_state(model) -> dict[str, np.ndarray]:
    ours_to_released = {released_to_ours(k): k for k in _released_shapes()}
    return {ours_to_released[k]: v.numpy().copy() for k, v in model.state_dict().items()}


def test_convert_vitdet_from_a_detectron2_pkl(tmp_path, images):
    from pseudolabel.__main__ import main

    reference = load_detector_free_model()
    pkl = tmp_path / "model_final.pkl"
    pkl.write_bytes(pickle.dumps({"model": _detectron2_state(reference), "__author__": "test"}, protocol=2))
    out = tmp_path / "vitdet"
    assert main(["convert-vitdet", str(pkl), str(out), "--profile", "tiny"]) == 0
    det = small(load_detector(out, threshold=0.0, max_detections=10))
    assert det.family.name == "vitdet"
    for k, v in reference.state_dict().items():
        assert torch.equal(det.model.state_dict()[k], v), k
    first = detect(det, images)
    assert all(1 <= len(d.boxes) <= 10 for d in first)
    assert detect(det, images) == first


def test_a_pkl_that_would_run_code_is_refused(tmp_path):
    from fourm_core.checkpoints import CheckpointError
    from pseudolabel.detection.vitdet_convert import read_checkpoint

    class Payload:
        def __reduce__(self):
            return (print, ("pickle executed",))

    pkl = tmp_path / "evil.pkl"
    pkl.write_bytes(pickle.dumps({"model": {"x": Payload()}}, protocol=2))
    with pytest.raises(CheckpointError, match=r"evil\.pkl: refusing to load \S*print: only numpy arrays"):
        read_checkpoint(pkl)


def load_detector_free_model():
    """The tiny ViTDet with non-trivial weights (seeded)."""
    torch.manual_seed(0)
    model = ViTDetForObjectDetection(build_config("vitdet", "tiny")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model
