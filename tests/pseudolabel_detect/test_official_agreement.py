"""Numerical agreement of our hand-written HMR2 and ViTDet Cascade code with independent official
implementations that are installed here, on shared random weights.

Neither 4D-Humans (hmr2) nor detectron2 installs here (neither is on PyPI in a usable form), so the reference
for each part is the closest official implementation that is:

* HMR2 backbone (released ``backbone.*`` names, incl. the class-token slot of ``pos_embed`` our converter folds
  in) vs transformers' ``VitPoseBackbone`` (the ViTPose ViT HMR2.0 uses: patch conv padding 2, ``pe[:, 1:] +
  pe[:, :1]``, LayerNorm eps 1e-6);
* ViTDet RPN (anchors, 2-conv head, decoding, per-level top-k, clipping, NMS by level) vs torchvision's
  ``AnchorGenerator`` + ``RPNHead(conv_depth=2)`` + ``RegionProposalNetwork``;
* each cascade stage's box head vs torchvision's ``FastRCNNConvFCHead`` with a channel LayerNorm; ROI pooling
  with torchvision's FPN ``LevelMapper`` + ``roi_align(aligned=True)``; stage boxes with torchvision's ``BoxCoder``;
  the final scoring / per-class NMS / top-k with torchvision's ``RoIHeads.postprocess_detections``.

* ViTDet mask head (detectron2's ``MaskRCNNConvUpsampleHead`` with LayerNorm) vs torchvision's ``MaskRCNNHeads``
  (channel LayerNorm) + ``MaskRCNNPredictor``; 14×14 mask ROI pooling as above; class-specific probabilities vs
  torchvision's ``maskrcnn_inference``;
* HMR2's SMPL head (one zero token embedded + query position, pre-norm self-attention / cross-attention to the
  backbone tokens (context not normalised) / GELU MLP, then linear pose / shape / camera residuals on the mean
  parameters, 6D -> rotation matrices) vs ``torch.nn.TransformerDecoder`` of ``TransformerDecoderLayer(
  norm_first=True, activation="gelu")`` with a ``MultiheadAttention(kdim=vdim=context)`` for cross-attention and
  rotations by QR (Gram-Schmidt with positive diagonal). torch's attention projects to the model width, so this
  runs at a size where heads × head_dim = width (HMR2.0 has 8 × 64 = 512 inside a 1024-d decoder; our layers take
  both as separate sizes, which torch's cannot check); qkv carry no bias in HMR2, so torch's in-projection bias is 0.

Not covered numerically (no independent implementation installed): ViTDet's simple feature pyramid (checked by
names and shapes only, tests/pseudolabel_detect/test_vitdet.py). ``python -m
tests.pseudolabel_detect.test_official_agreement`` prints the figures.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from functools import partial

import torch

from pseudolabel.detection.families import build_config
from pseudolabel.detection.vitdet import ViTDetForObjectDetection, base_anchors
from pseudolabel.humans.checkpoint import hmr2_to_ours, ours_to_hmr2
from pseudolabel.humans.config import TINY as HMR2_TINY
from pseudolabel.humans.config import HMR2Config
from pseudolabel.humans.model import HMR2

TOL = 1e-4  # float32 CPU, different op orders


# ------------------------------------------------------------------------------------------------ HMR2

def _hmr2_released_random(seed: int = 0, cfg: HMR2Config = HMR2_TINY) -> dict[str, torch.Tensor]:
    """A released-layout (4D-Humans names) HMR2 state dict at a small size with random weights, including a
    non-zero class-token slot in ``backbone.pos_embed`` (the released file has one)."""
    g = torch.Generator().manual_seed(seed)
    theirs = ours_to_hmr2(HMR2(cfg).state_dict())
    return {k: torch.randn(v.shape, generator=g) * (0.02 if v.ndim > 1 else 0.1) + (1.0 if "norm" in k and
            k.endswith("weight") else 0.0) for k, v in theirs.items()}


def _vitpose_from_released(theirs: dict[str, torch.Tensor]):
    """transformers' VitPoseBackbone at the tiny HMR2 size, loaded (strictly) from the released backbone names."""
    from transformers import VitPoseBackbone, VitPoseBackboneConfig

    c = HMR2_TINY
    model = VitPoseBackbone(VitPoseBackboneConfig(
        image_size=[c.image_height, c.image_width], patch_size=[c.patch_size, c.patch_size], hidden_size=c.embed_dim,
        num_hidden_layers=c.depth, num_attention_heads=c.num_heads, mlp_ratio=int(c.mlp_ratio), qkv_bias=True,
        layer_norm_eps=1e-6, out_indices=[c.depth]))
    names = {"patch_embed.proj": "embeddings.patch_embeddings.projection", "last_norm": "layernorm",
             "norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.output.dense"}
    state = {}
    for k, v in theirs.items():
        if not k.startswith("backbone."):
            continue
        k = k.removeprefix("backbone.")
        if k == "pos_embed":
            state["embeddings.position_embeddings"] = v
            continue
        parts = k.split(".")
        if parts[0] == "blocks":
            inner = ".".join(parts[2:-1])
            prefix = f"encoder.layer.{parts[1]}."
            if inner == "attn.qkv":
                for name, t in zip(("query", "key", "value"), v.chunk(3)):
                    state[prefix + f"attention.attention.{name}.{parts[-1]}"] = t
                continue
            state[prefix + names.get(inner, inner) + "." + parts[-1]] = v
        else:
            state[names[".".join(parts[:-1])] + "." + parts[-1]] = v
    model.load_state_dict(state, strict=True)
    return model.eval()


def hmr2_backbone_diff() -> float:
    theirs = _hmr2_released_random()
    ours = HMR2(HMR2_TINY)
    ours.load_state_dict(hmr2_to_ours(theirs), strict=True)
    ref = _vitpose_from_released(theirs)
    x = torch.randn(2, 3, HMR2_TINY.image_height, HMR2_TINY.image_width, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = ours.eval().backbone(x)
        want = ref(x).feature_maps[-1]
    want = want.flatten(2).transpose(1, 2) if want.ndim == 4 else want  # (B, N, D) either way
    assert got.shape == want.shape
    return float((got - want).abs().max())


def test_hmr2_backbone_matches_transformers_vitpose():
    assert hmr2_backbone_diff() < TOL


# HMR2 head at a size torch's attention can express (heads x head_dim = width) and where the context (backbone)
# width differs from the decoder's, so the cross-attention's key / value projections are checked as separate sizes
HEAD_CFG = replace(HMR2_TINY, embed_dim=48, dec_dim=32, dec_heads=2, dec_dim_head=16, dec_mlp_dim=64)


def _torch_decoder_from_released(theirs: dict[str, torch.Tensor], cfg: HMR2Config) -> torch.nn.TransformerDecoder:
    """torch's pre-norm TransformerDecoder loaded (strictly) from the released ``smpl_head.transformer`` names."""
    from torch import nn

    d, h = cfg.dec_dim, cfg.dec_heads
    if h * cfg.dec_dim_head != d:
        raise ValueError(f"torch's attention needs heads x head_dim == width, got {h} x {cfg.dec_dim_head} != {d}")
    layer = nn.TransformerDecoderLayer(d, h, cfg.dec_mlp_dim, dropout=0.0, activation="gelu", batch_first=True,
                                       norm_first=True)
    layer.multihead_attn = nn.MultiheadAttention(d, h, batch_first=True, kdim=cfg.embed_dim, vdim=cfg.embed_dim)
    dec = nn.TransformerDecoder(layer, cfg.dec_depth)
    pre = "smpl_head.transformer.transformer.layers"
    state = {}
    for j in range(cfg.dec_depth):
        src, dst = f"{pre}.{j}.", f"layers.{j}."
        sa, ca, ff = src + "0.", src + "1.", src + "2."
        k, v = theirs[ca + "fn.to_kv.weight"].chunk(2)
        state |= {dst + "self_attn.in_proj_weight": theirs[sa + "fn.to_qkv.weight"],
                  dst + "self_attn.in_proj_bias": torch.zeros(3 * d),
                  dst + "self_attn.out_proj.weight": theirs[sa + "fn.to_out.0.weight"],
                  dst + "self_attn.out_proj.bias": theirs[sa + "fn.to_out.0.bias"],
                  dst + "multihead_attn.q_proj_weight": theirs[ca + "fn.to_q.weight"],
                  dst + "multihead_attn.k_proj_weight": k, dst + "multihead_attn.v_proj_weight": v,
                  dst + "multihead_attn.in_proj_bias": torch.zeros(3 * d),
                  dst + "multihead_attn.out_proj.weight": theirs[ca + "fn.to_out.0.weight"],
                  dst + "multihead_attn.out_proj.bias": theirs[ca + "fn.to_out.0.bias"],
                  dst + "linear1.weight": theirs[ff + "fn.net.0.weight"], dst + "linear1.bias": theirs[ff + "fn.net.0.bias"],
                  dst + "linear2.weight": theirs[ff + "fn.net.3.weight"], dst + "linear2.bias": theirs[ff + "fn.net.3.bias"]}
        for n, norm in ((1, sa), (2, ca), (3, ff)):
            state |= {dst + f"norm{n}.weight": theirs[norm + "norm.weight"], dst + f"norm{n}.bias": theirs[norm + "norm.bias"]}
    dec.load_state_dict(state, strict=True)
    return dec.eval()


def _qr_rotmat(x6: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) via QR of [a1 a2] (3×2, a1 = first three numbers, as HMR2.0), diagonal of R made
    positive, third column the cross product: Gram-Schmidt computed another way."""
    a = torch.stack((x6[..., :3], x6[..., 3:6]), dim=-1)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[..., None, :]
    return torch.cat((q, torch.linalg.cross(q[..., 0], q[..., 1], dim=-1)[..., None]), dim=-1)


def hmr2_head_diffs(cfg: HMR2Config = HEAD_CFG) -> dict[str, float]:
    """Our SMPL head vs torch's decoder + the released linear decoders, on one released-layout random state dict."""
    # head weights at unit gain (std 1/sqrt(fan_in), query 1) so every layer moves the outputs well above float
    # rounding; the shared 0.02 init leaves the decoder's contribution near the mean parameters' ulp
    theirs = {k: v * (1 / (0.02 * v.shape[-1] ** 0.5) if v.ndim == 2 else 50.0 if v.ndim == 3 else 1.0)
              if k.startswith("smpl_head.transformer") or k.startswith("smpl_head.dec") else v
              for k, v in _hmr2_released_random(seed=2, cfg=cfg).items()}
    ours = HMR2(cfg).eval()
    ours.load_state_dict(hmr2_to_ours(theirs), strict=True)
    dec = _torch_decoder_from_released(theirs, cfg)
    tokens = torch.randn(3, cfg.grid[0] * cfg.grid[1], cfg.embed_dim, generator=torch.Generator().manual_seed(5))
    p = "smpl_head."

    def linear(name: str, x: torch.Tensor) -> torch.Tensor:
        return x @ theirs[p + name + ".weight"].T + theirs[p + name + ".bias"]

    with torch.no_grad():
        got = ours.head(tokens)
        query = linear("transformer.to_token_embedding", torch.zeros(3, 1, 1)) + theirs[p + "transformer.pos_embedding"]
        x = dec(query, tokens)[:, 0]
        rot = _qr_rotmat((linear("decpose", x) + theirs[p + "init_body_pose"]).view(3, -1, 6))
        want = {"rotations": rot, "betas": linear("decshape", x) + theirs[p + "init_betas"],
                "camera": linear("deccam", x) + theirs[p + "init_cam"]}
    got_rot = torch.cat((got.global_orient[:, None], got.body_pose), 1)
    return {"rotations": float((got_rot - want["rotations"]).abs().max()),
            "betas": float((got.betas - want["betas"]).abs().max()),
            "camera": float((got.camera - want["camera"]).abs().max())}


def test_hmr2_smpl_head_matches_torch_transformer_decoder():
    diffs = hmr2_head_diffs()
    assert max(diffs.values()) < TOL, diffs


# ------------------------------------------------------------------------------------------------ ViTDet

def _tiny_vitdet(seed: int = 0) -> ViTDetForObjectDetection:
    """Tiny ViTDet with weights large enough that proposals and scores spread (the default init is near zero)."""
    torch.manual_seed(seed)
    model = ViTDetForObjectDetection(build_config("vitdet", "tiny")).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "roi_heads" in name or "rpn_head" in name:
                p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.ndim > 1 else 0.5) / max(1, p[0].numel()) ** 0.5
                        + (1.0 if "norm.weight" in name else 0.0))
    return model


def _torchvision_rpn(model: ViTDetForObjectDetection):
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead

    cfg = model.config
    anchors = AnchorGenerator(sizes=tuple((s,) for s in cfg.anchor_sizes),
                              aspect_ratios=(tuple(cfg.aspect_ratios),) * len(cfg.anchor_sizes))
    # torchvision rounds its cell anchors; detectron2 does not. Same anchors otherwise (checked here), so the
    # reference gets detectron2's unrounded ones.
    for tv, size in zip(anchors.cell_anchors, cfg.anchor_sizes):
        assert torch.equal(tv, base_anchors(size, cfg.aspect_ratios).round())
    anchors.cell_anchors = [base_anchors(s, cfg.aspect_ratios) for s in cfg.anchor_sizes]
    head = RPNHead(cfg.fpn_channels, len(cfg.aspect_ratios), conv_depth=2)
    ours = model.proposal_generator.rpn_head
    head.load_state_dict({"conv.0.0.weight": ours.conv.conv0.weight, "conv.0.0.bias": ours.conv.conv0.bias,
                          "conv.1.0.weight": ours.conv.conv1.weight, "conv.1.0.bias": ours.conv.conv1.bias,
                          "cls_logits.weight": ours.objectness_logits.weight,
                          "cls_logits.bias": ours.objectness_logits.bias,
                          "bbox_pred.weight": ours.anchor_deltas.weight, "bbox_pred.bias": ours.anchor_deltas.bias})
    rpn = RegionProposalNetwork(anchors, head, 0.7, 0.3, 256, 0.5,
                                pre_nms_top_n=dict(training=0, testing=cfg.rpn_pre_nms_topk),
                                post_nms_top_n=dict(training=0, testing=cfg.rpn_post_nms_topk),
                                nms_thresh=cfg.rpn_nms, score_thresh=0.0)
    return rpn.eval()


def _torchvision_box_head(model: ViTDetForObjectDetection, k: int):
    from torchvision.models.convnext import LayerNorm2d
    from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead

    cfg = model.config
    head = FastRCNNConvFCHead((cfg.fpn_channels, 7, 7), [cfg.box_conv_dims] * 4, [cfg.box_fc_dim],
                              norm_layer=partial(LayerNorm2d, eps=1e-6))
    ours = model.roi_heads.box_head[k]
    state = {}
    for j in range(4):
        conv = getattr(ours, f"conv{j + 1}")
        state |= {f"{j}.0.weight": conv.weight, f"{j}.1.weight": conv.norm.weight, f"{j}.1.bias": conv.norm.bias}
    state |= {"5.weight": ours.fc1.weight, "5.bias": ours.fc1.bias}
    head.load_state_dict(state, strict=True)
    return head.eval()


def _torchvision_pool(feats: list[torch.Tensor], boxes: list[torch.Tensor], size: int = 7) -> torch.Tensor:
    """FPN level rule of torchvision (LevelMapper, canonical 224 at p4, p2..p5) + ROIAlignV2 per level."""
    from torchvision.ops import roi_align
    from torchvision.ops.poolers import initLevelMapper

    levels = initLevelMapper(2, 5)(boxes)
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(boxes)])
    out = rois.new_zeros((len(rois), feats[0].shape[1], size, size))
    for lvl, f in enumerate(feats[:4]):
        idx = torch.nonzero(levels == lvl).squeeze(1)
        out[idx] = roi_align(f, rois[idx], size, spatial_scale=1.0 / 2 ** (lvl + 2), sampling_ratio=0, aligned=True)
    return out


def _torchvision_cascade(model: ViTDetForObjectDetection, x: torch.Tensor, thresh: float):
    """The whole inference (after our feature pyramid) assembled from torchvision's components."""
    from torchvision.models.detection._utils import BoxCoder
    from torchvision.models.detection.image_list import ImageList
    from torchvision.models.detection.roi_heads import RoIHeads
    from torchvision.ops.boxes import clip_boxes_to_image

    cfg = model.config
    b, _, h, w = x.shape
    s = cfg.image_size
    with torch.no_grad():
        feats = model.backbone(torch.nn.functional.pad(x, (0, s - w, 0, s - h)))
        images = ImageList(torch.zeros(b, 3, s, s), [(h, w)] * b)
        proposals, _ = _torchvision_rpn(model).eval()(images, OrderedDict((str(i), f) for i, f in enumerate(feats)))
        boxes, probs, deltas = proposals, [], torch.empty(0, 4)
        counts = [len(p) for p in proposals]
        for k in range(len(cfg.cascade_weights)):
            if k:
                coder = BoxCoder(tuple(cfg.cascade_weights[k - 1]))
                boxes = [clip_boxes_to_image(coder.decode_single(d, bx), (h, w))
                         for d, bx in zip(deltas.split(counts), boxes)]
            feat = _torchvision_box_head(model, k)(_torchvision_pool(feats, boxes))
            pred = model.roi_heads.box_predictor[k]
            probs.append(torch.softmax(pred.cls_score(feat), -1))
            deltas = pred.bbox_pred(feat)
        mean = sum(probs) / len(probs)
        # torchvision: background is class 0 and regression is per class; detectron2: background last, one box
        logits = torch.log(torch.cat([mean[:, -1:], mean[:, :-1]], 1))
        heads = RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, tuple(cfg.cascade_weights[-1]), thresh, cfg.nms,
                         cfg.detections_per_image)
        return heads.postprocess_detections(logits, deltas.repeat(1, cfg.num_classes + 1), boxes, [(h, w)] * b)


def vitdet_diffs() -> dict[str, float]:
    """Max abs differences between our ViTDet and the torchvision-assembled reference on one random input."""
    model = _tiny_vitdet()
    cfg = model.config
    x = torch.randn(2, 3, 96, cfg.image_size, generator=torch.Generator().manual_seed(3))
    s = cfg.image_size
    from torchvision.models.detection.image_list import ImageList

    with torch.no_grad():
        feats = model.backbone(torch.nn.functional.pad(x, (0, 0, 0, s - 96)))
        ours_props = model._proposals(feats, [(96, s)] * 2)
        tv_props, _ = _torchvision_rpn(model)(ImageList(torch.zeros(2, 3, s, s), [(96, s)] * 2),
                                              OrderedDict((str(i), f) for i, f in enumerate(feats)))
    out = {"rpn_proposals": max(float((a - b).abs().max()) for a, b in zip(ours_props, tv_props))}
    assert all(len(a) == len(b) > 10 for a, b in zip(ours_props, tv_props))
    with torch.no_grad():
        head_in = torch.randn(5, cfg.fpn_channels, 7, 7, generator=torch.Generator().manual_seed(4))
        out["box_head"] = max(float((model.roi_heads.box_head[k](head_in) - _torchvision_box_head(model, k)(head_in))
                                    .abs().max()) for k in range(3))
        out["roi_pool"] = float((model_pool(feats, ours_props) - _torchvision_pool(feats, ours_props)).abs().max())
    out |= mask_head_diffs(model, feats, ours_props)
    thresh = 0.02
    ours = model(x, score_thresh=thresh).instances
    tv_boxes, tv_scores, tv_labels = _torchvision_cascade(model, x, thresh)
    assert all(len(o.boxes) > 5 for o in ours), [len(o.boxes) for o in ours]
    for o, bx, sc, lb in zip(ours, tv_boxes, tv_scores, tv_labels):
        assert len(o.boxes) == len(bx) and torch.equal(o.labels, lb - 1)
        out["final_boxes"] = max(out.get("final_boxes", 0.0), float((o.boxes - bx).abs().max()))
        out["final_scores"] = max(out.get("final_scores", 0.0), float((o.scores - sc).abs().max()))
    out["detections"] = float(sum(len(o.boxes) for o in ours))
    return out


def _released_mask_head(model: ViTDetForObjectDetection, seed: int = 7) -> dict[str, torch.Tensor]:
    """Random detectron2-layout ``roi_heads.mask_head.*`` weights (unit gain so every layer shows)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {k: v.shape for k, v in model.state_dict().items() if k.startswith("roi_heads.mask_head.")}
    return {k: torch.randn(shape, generator=g) / (shape[1:].numel() ** 0.5 if len(shape) > 1 else 2.0)
            + (1.0 if k.endswith("norm.weight") else 0.0) for k, shape in shapes.items()}


def _torchvision_mask_head(released: dict[str, torch.Tensor], cfg) -> torch.nn.Sequential:
    """torchvision's mask head + predictor loaded (strictly) from detectron2's mask-head names."""
    from torchvision.models.convnext import LayerNorm2d
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    heads = MaskRCNNHeads(cfg.fpn_channels, [cfg.mask_conv_dims] * 4, 1, norm_layer=partial(LayerNorm2d, eps=1e-6))
    # torchvision counts the background among its classes; detectron2's predictor has one channel per class, so
    # the reference is built with num_classes channels and labels index them directly
    predictor = MaskRCNNPredictor(cfg.mask_conv_dims, cfg.mask_conv_dims, cfg.num_classes)
    p = "roi_heads.mask_head."
    state = {}
    for j in range(4):
        conv = f"{p}mask_fcn{j + 1}."
        state |= {f"{j}.0.weight": released[conv + "weight"], f"{j}.1.weight": released[conv + "norm.weight"],
                  f"{j}.1.bias": released[conv + "norm.bias"]}
    heads.load_state_dict(state, strict=True)
    predictor.load_state_dict({"conv5_mask.weight": released[p + "deconv.weight"],
                               "conv5_mask.bias": released[p + "deconv.bias"],
                               "mask_fcn_logits.weight": released[p + "predictor.weight"],
                               "mask_fcn_logits.bias": released[p + "predictor.bias"]}, strict=True)
    return torch.nn.Sequential(heads, predictor).eval()


def mask_head_diffs(model: ViTDetForObjectDetection, feats: list[torch.Tensor],
                    boxes: list[torch.Tensor]) -> dict[str, float]:
    """Mask ROI pooling (14×14), mask logits and class-specific probabilities, ours (mask-head weights loaded
    through our converter) vs torchvision (the same weights by detectron2's names)."""
    from torchvision.models.detection.roi_heads import maskrcnn_inference

    from pseudolabel.detection.vitdet_convert import convert_state_dict

    released = _released_mask_head(model)
    head = model.roi_heads.mask_head
    head.load_state_dict({k.removeprefix("roi_heads.mask_head."): v
                          for k, v in convert_state_dict(released).items()}, strict=True)
    with torch.no_grad():
        pooled = model_pool(feats, boxes, 14)
        ref_pooled = _torchvision_pool(feats, boxes, 14)
        logits, ref_logits = head(pooled), _torchvision_mask_head(released, model.config)(pooled)
        labels = torch.randint(0, model.config.num_classes, (len(pooled),), generator=torch.Generator().manual_seed(6))
        probs = head.class_probs(logits, labels)
        ref_probs = torch.cat(maskrcnn_inference(ref_logits, [labels]))
    assert logits.shape == (len(pooled), model.config.num_classes, 28, 28) and probs.shape == ref_probs.shape
    return {"mask_pool": float((pooled - ref_pooled).abs().max()), "mask_logits": float((logits - ref_logits).abs().max()),
            "mask_probs": float((probs - ref_probs).abs().max())}


def model_pool(feats, boxes, size: int = 7):
    from pseudolabel.detection.vitdet import pool_boxes

    return pool_boxes(feats[:4], boxes, size)


def test_vitdet_rpn_box_heads_and_cascade_match_torchvision():
    diffs = vitdet_diffs()
    for key in ("rpn_proposals", "box_head", "roi_pool", "mask_pool", "mask_logits", "mask_probs", "final_boxes",
                "final_scores"):
        assert diffs[key] < TOL, (key, diffs)


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(f"HMR2 backbone vs transformers VitPoseBackbone: max abs diff {hmr2_backbone_diff():.2e}")
    for k, v in hmr2_head_diffs().items():
        print(f"HMR2 SMPL head {k} vs torch TransformerDecoder(norm_first) + QR rotations: max abs diff {v:.2e}")
    for k, v in vitdet_diffs().items():
        print(f"ViTDet {k} vs torchvision: {'max abs diff ' if k != 'detections' else ''}{v:.3g}")
