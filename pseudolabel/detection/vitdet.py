"""ViTDet with a Cascade Mask R-CNN head (detectron2's COCO ViTDet-H recipe), written with torch + torchvision ops.

The network, module for module, with detectron2's parameter names (so a released checkpoint maps onto it by
prefix only, see :mod:`.vitdet_convert`):

* ``backbone.net``: the plain ViT with windowed / global attention and decomposed relative positions. This is
  transformers' ``VitDetBackbone`` (the same network; its names differ from detectron2's and are mapped).
* ``backbone.simfp_{2,3,4,5}``: the simple feature pyramid from the last ViT map (stride 16): deconvolutions to
  strides 4 and 8, identity at 16, max-pool to 32, each then 1×1 and 3×3 convs with channel LayerNorm; p6 =
  stride-2 subsampling of p5 (``LastLevelMaxPool``).
* ``proposal_generator.rpn_head``: two 3×3 convs, objectness and box deltas for 3 anchors per position (sizes
  32…512 over p2…p6, aspect ratios 0.5 / 1 / 2); top 1000 per level, NMS 0.7, 1000 proposals.
* ``roi_heads.box_head.{0,1,2}`` / ``box_predictor.{0,1,2}``: the three cascade stages (4 conv + 1 fc heads with
  LayerNorm, class-agnostic box regression with weights (10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15)); the
  class scores are the mean of the three stages' softmax, the boxes the last stage's, then per-class NMS 0.5 and
  the top 100 detections. ROIAlignV2 (aligned) pooling over p2…p5 with the FPN level rule (canonical 224 → p4).
* ``roi_heads.mask_head``: the mask branch (4 conv + deconv + predictor) is built so a released checkpoint loads
  strictly; :class:`MaskHead` can run on ROI features, but the model's forward does not: the ``det`` label is boxes
  only.

Inputs: ImageNet-normalised RGB whose longer side is ``config.image_size`` (1024), zero-padded to a square of that
side inside the model (detectron2's ``square_pad``). Outputs: per image, boxes in the unpadded input's pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, roi_align
from transformers import PretrainedConfig, PreTrainedModel

MODEL_TYPE = "fourm_vitdet_cascade"


class ViTDetCascadeConfig(PretrainedConfig):
    """Sizes of the ViTDet Cascade Mask R-CNN. Defaults: detectron2's COCO ViTDet-H (75 epochs) recipe."""

    model_type = MODEL_TYPE

    def __init__(self, embed_dim: int = 1280, depth: int = 32, num_heads: int = 16, mlp_ratio: int = 4,
                 image_size: int = 1024, pretrain_image_size: int = 224, patch_size: int = 16, window_size: int = 14,
                 window_block_indexes: list[int] | None = None, fpn_channels: int = 256,
                 anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512), aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
                 rpn_pre_nms_topk: int = 1000, rpn_post_nms_topk: int = 1000, rpn_nms: float = 0.7,
                 box_conv_dims: int = 256, box_fc_dim: int = 1024, mask_conv_dims: int = 256,
                 cascade_weights: tuple[tuple[float, ...], ...] = ((10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15)),
                 score_thresh: float = 0.05, nms: float = 0.5, detections_per_image: int = 100, num_classes: int = 80,
                 **kwargs):
        super().__init__(**kwargs)
        self.embed_dim, self.depth, self.num_heads, self.mlp_ratio = embed_dim, depth, num_heads, mlp_ratio
        self.image_size, self.pretrain_image_size, self.patch_size = image_size, pretrain_image_size, patch_size
        self.window_size = window_size
        # ViTDet-H: global attention in blocks 7, 15, 23, 31, windowed elsewhere
        self.window_block_indexes = list(window_block_indexes if window_block_indexes is not None else
                                         [i for i in range(depth) if i % 8 != 7])
        self.fpn_channels, self.anchor_sizes, self.aspect_ratios = fpn_channels, list(anchor_sizes), list(aspect_ratios)
        self.rpn_pre_nms_topk, self.rpn_post_nms_topk, self.rpn_nms = rpn_pre_nms_topk, rpn_post_nms_topk, rpn_nms
        self.box_conv_dims, self.box_fc_dim, self.mask_conv_dims = box_conv_dims, box_fc_dim, mask_conv_dims
        self.cascade_weights = [list(w) for w in cascade_weights]
        self.score_thresh, self.nms, self.detections_per_image = score_thresh, nms, detections_per_image
        self.num_classes = num_classes


TINY = dict(embed_dim=32, depth=2, num_heads=2, image_size=128, pretrain_image_size=32, window_size=4,
            window_block_indexes=[0], fpn_channels=16, box_conv_dims=16, box_fc_dim=32, mask_conv_dims=16,
            rpn_pre_nms_topk=200, rpn_post_nms_topk=100)


# ------------------------------------------------------------------------------------------------ layers

class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a B×C×H×W map (detectron2's ``LayerNorm`` for convolutions)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvNorm(nn.Conv2d):
    """A conv with a channel LayerNorm after it (``.norm``) and an optional ReLU; no bias, as detectron2 builds it."""

    def __init__(self, cin: int, cout: int, kernel: int, relu: bool = False):
        super().__init__(cin, cout, kernel, padding=kernel // 2, bias=False)
        self.norm, self.relu = LayerNorm2d(cout), relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(super().forward(x))
        return F.relu(x) if self.relu else x


class SimpleFeaturePyramid(nn.Module):
    """Last ViT map (B×D×S/16×S/16) -> p2…p6 (B×C×S/4 … S/64)."""

    def __init__(self, cfg: ViTDetCascadeConfig):
        super().__init__()
        from transformers import VitDetBackbone, VitDetConfig

        d, c = cfg.embed_dim, cfg.fpn_channels
        self.net = VitDetBackbone(VitDetConfig(
            hidden_size=d, num_hidden_layers=cfg.depth, num_attention_heads=cfg.num_heads, mlp_ratio=int(cfg.mlp_ratio),
            image_size=cfg.image_size, pretrain_image_size=cfg.pretrain_image_size, patch_size=cfg.patch_size,
            window_size=cfg.window_size, window_block_indices=cfg.window_block_indexes, qkv_bias=True,
            use_relative_position_embeddings=True, use_absolute_position_embeddings=True, layer_norm_eps=1e-6,
            out_features=[f"stage{cfg.depth}"]))
        self.simfp_2 = nn.Sequential(nn.ConvTranspose2d(d, d // 2, 2, 2), LayerNorm2d(d // 2), nn.GELU(),
                                     nn.ConvTranspose2d(d // 2, d // 4, 2, 2), ConvNorm(d // 4, c, 1), ConvNorm(c, c, 3))
        self.simfp_3 = nn.Sequential(nn.ConvTranspose2d(d, d // 2, 2, 2), ConvNorm(d // 2, c, 1), ConvNorm(c, c, 3))
        self.simfp_4 = nn.Sequential(ConvNorm(d, c, 1), ConvNorm(c, c, 3))
        self.simfp_5 = nn.Sequential(nn.MaxPool2d(2, 2), ConvNorm(d, c, 1), ConvNorm(c, c, 3))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        last = self.net(pixel_values=x).feature_maps[-1]
        feats = [self.simfp_2(last), self.simfp_3(last), self.simfp_4(last), self.simfp_5(last)]
        return feats + [F.max_pool2d(feats[-1], kernel_size=1, stride=2)]  # p6


class RPNHead(nn.Module):
    def __init__(self, channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Sequential()
        for k in range(2):  # ViTDet: two 3×3 convs
            self.conv.add_module(f"conv{k}", nn.Conv2d(channels, channels, 3, padding=1))
        self.objectness_logits = nn.Conv2d(channels, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(channels, num_anchors * 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p_l (B×C×H×W) -> objectness (B×HWA), deltas (B×HWA×4), in (y, x, anchor) order."""
        for conv in self.conv:
            x = F.relu(conv(x))
        b, _, h, w = x.shape
        logits = self.objectness_logits(x).permute(0, 2, 3, 1).flatten(1)
        deltas = self.anchor_deltas(x).view(b, -1, 4, h, w).permute(0, 3, 4, 1, 2).flatten(1, -2)
        return logits, deltas


class BoxHead(nn.Module):
    """4 × (3×3 conv + LayerNorm + ReLU) then fc + ReLU: B×C×7×7 -> B×F."""

    def __init__(self, channels: int, conv_dims: int, fc_dim: int):
        super().__init__()
        for k in range(4):
            self.add_module(f"conv{k + 1}", ConvNorm(channels if k == 0 else conv_dims, conv_dims, 3, relu=True))
        self.fc1 = nn.Linear(conv_dims * 7 * 7, fc_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k in range(4):
            x = getattr(self, f"conv{k + 1}")(x)
        return F.relu(self.fc1(x.flatten(1)))


class BoxPredictor(nn.Module):
    def __init__(self, fc_dim: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(fc_dim, num_classes + 1)  # last = background
        self.bbox_pred = nn.Linear(fc_dim, 4)  # class-agnostic


class MaskHead(nn.Module):
    """detectron2's ``MaskRCNNConvUpsampleHead`` with LayerNorm: 4 × (3×3 conv + LayerNorm + ReLU), 2×2 stride-2
    deconv + ReLU, 1×1 class-specific predictor. The det label does not use masks (the model's forward never runs
    this); it is loaded strictly from released checkpoints and checked against torchvision's mask head."""

    def __init__(self, channels: int, conv_dims: int, num_classes: int):
        super().__init__()
        for k in range(4):
            self.add_module(f"mask_fcn{k + 1}", ConvNorm(channels if k == 0 else conv_dims, conv_dims, 3, relu=True))
        self.deconv = nn.ConvTranspose2d(conv_dims, conv_dims, 2, 2)
        self.predictor = nn.Conv2d(conv_dims, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ROI features K×C×14×14 (:func:`pool_boxes` at 14) -> per-class mask logits K×num_classes×28×28."""
        for k in range(4):
            x = getattr(self, f"mask_fcn{k + 1}")(x)
        return self.predictor(F.relu(self.deconv(x)))

    @staticmethod
    def class_probs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """K×num_classes×28×28 logits, K labels (0…79) -> K×1×28×28 mask probabilities of each box's class
        (detectron2's ``mask_rcnn_inference``)."""
        return logits[torch.arange(len(labels), device=logits.device), labels][:, None].sigmoid()


class ROIHeads(nn.Module):
    def __init__(self, cfg: ViTDetCascadeConfig):
        super().__init__()
        c = cfg.fpn_channels
        self.box_head = nn.ModuleList(BoxHead(c, cfg.box_conv_dims, cfg.box_fc_dim) for _ in cfg.cascade_weights)
        self.box_predictor = nn.ModuleList(BoxPredictor(cfg.box_fc_dim, cfg.num_classes) for _ in cfg.cascade_weights)
        self.mask_head = MaskHead(c, cfg.mask_conv_dims, cfg.num_classes)


class ProposalGenerator(nn.Module):
    def __init__(self, cfg: ViTDetCascadeConfig):
        super().__init__()
        self.rpn_head = RPNHead(cfg.fpn_channels, len(cfg.aspect_ratios))


# ------------------------------------------------------------------------------------------------ box math

def base_anchors(size: float, ratios: list[float]) -> torch.Tensor:
    """A×4 anchors centred at 0: area size², height/width = ratio."""
    out = []
    for r in ratios:
        w = math.sqrt(size * size / r)
        h = r * w
        out.append([-w / 2, -h / 2, w / 2, h / 2])
    return torch.tensor(out)


def grid_anchors(h: int, w: int, stride: int, base: torch.Tensor) -> torch.Tensor:
    """(H·W·A)×4 anchors of one level, in (y, x, anchor) order like the RPN outputs."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32) * stride,
                            torch.arange(w, dtype=torch.float32) * stride, indexing="ij")
    shifts = torch.stack([xs.reshape(-1), ys.reshape(-1)] * 2, dim=1)
    return (shifts[:, None, :] + base[None].to(shifts)).reshape(-1, 4)


_SCALE_CLAMP = math.log(1000.0 / 16)


def apply_deltas(deltas: torch.Tensor, boxes: torch.Tensor, weights: tuple[float, ...]) -> torch.Tensor:
    """Faster R-CNN box decoding: N×4 deltas (dx, dy, dw, dh) on N×4 xyxy boxes -> N×4 xyxy."""
    wx, wy, ww, wh = weights
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights
    dx, dy = deltas[:, 0] / wx, deltas[:, 1] / wy
    dw = (deltas[:, 2] / ww).clamp(max=_SCALE_CLAMP)
    dh = (deltas[:, 3] / wh).clamp(max=_SCALE_CLAMP)
    pcx, pcy = dx * widths + cx, dy * heights + cy
    pw, ph = torch.exp(dw) * widths, torch.exp(dh) * heights
    return torch.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], dim=1)


def clip_boxes(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h), boxes[:, 2].clamp(0, w),
                        boxes[:, 3].clamp(0, h)], dim=1)


def pool_boxes(features: list[torch.Tensor], boxes: list[torch.Tensor], output_size: int) -> torch.Tensor:
    """ROIAlignV2 of each box on its FPN level (p2…p5): level = ⌊4 + log2(√area / 224)⌋ clamped to [2, 5].
    features: p2…p5 maps B×C×H×W; boxes: per image K_i×4 xyxy pixels -> (ΣK_i)×C×S×S in the boxes' order."""
    rois = torch.cat([torch.cat([torch.full((len(b), 1), i, dtype=b.dtype, device=b.device), b], dim=1)
                      for i, b in enumerate(boxes)])
    areas = (rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2])
    levels = torch.floor(4 + torch.log2(torch.sqrt(areas) / 224 + 1e-8)).clamp(2, 5).long() - 2
    out = rois.new_zeros((len(rois), features[0].shape[1], output_size, output_size))
    for lvl, feat in enumerate(features):
        idx = torch.nonzero(levels == lvl).squeeze(1)
        if len(idx):
            out[idx] = roi_align(feat, rois[idx], output_size, spatial_scale=1.0 / 2 ** (lvl + 2),
                                 sampling_ratio=0, aligned=True)
    return out


# ------------------------------------------------------------------------------------------------ model

@dataclass
class Instances:
    """One image's detections: boxes K×4 xyxy pixels of the unpadded input, scores K, labels K (0…79)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor


@dataclass
class ViTDetOutput:
    instances: list[Instances]


class ViTDetForObjectDetection(PreTrainedModel):
    """ViTDet + Cascade Mask R-CNN, inference. ``forward(pixel_values)`` -> :class:`ViTDetOutput`."""

    config_class = ViTDetCascadeConfig
    base_model_prefix = "vitdet"
    main_input_name = "pixel_values"

    def __init__(self, config: ViTDetCascadeConfig):
        super().__init__(config)
        self.backbone = SimpleFeaturePyramid(config)
        self.proposal_generator = ProposalGenerator(config)
        self.roi_heads = ROIHeads(config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:  # random init (tiny profile, benches)
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def _proposals(self, feats: list[torch.Tensor], sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        cfg = self.config
        boxes, scores, levels = [], [], []
        for lvl, (x, size) in enumerate(zip(feats, cfg.anchor_sizes)):
            logits, deltas = self.proposal_generator.rpn_head(x)
            anchors = grid_anchors(x.shape[2], x.shape[3], 2 ** (lvl + 2), base_anchors(size, cfg.aspect_ratios))
            k = min(cfg.rpn_pre_nms_topk, logits.shape[1])
            top, idx = logits.topk(k, dim=1)
            boxes.append(torch.stack([apply_deltas(deltas[b, idx[b]], anchors.to(x)[idx[b]], (1.0, 1.0, 1.0, 1.0))
                                      for b in range(len(x))]))
            scores.append(top)
            levels.append(torch.full((k,), lvl, device=x.device))
        boxes, scores, levels = torch.cat(boxes, 1), torch.cat(scores, 1), torch.cat(levels)
        out = []
        for b, (h, w) in enumerate(sizes):
            bx = clip_boxes(boxes[b], h, w)
            keep = ((bx[:, 2] - bx[:, 0]) > 0) & ((bx[:, 3] - bx[:, 1]) > 0) & torch.isfinite(scores[b])
            bx, sc, lv = bx[keep], scores[b][keep], levels[keep]
            keep = batched_nms(bx, sc, lv, cfg.rpn_nms)[: cfg.rpn_post_nms_topk]
            out.append(bx[keep])
        return out

    def _cascade(self, feats: list[torch.Tensor], proposals: list[torch.Tensor], sizes: list[tuple[int, int]],
                 score_thresh: float) -> list[Instances]:
        cfg, heads = self.config, self.roi_heads
        boxes, probs, counts = proposals, [], [len(p) for p in proposals]
        deltas = None
        for k in range(len(cfg.cascade_weights)):
            if deltas is not None:  # the previous stage's regression gives this stage's boxes
                boxes = [clip_boxes(apply_deltas(d, b, cfg.cascade_weights[k - 1]), h, w)
                         for d, b, (h, w) in zip(deltas.split(counts), boxes, sizes)]
            x = heads.box_head[k](pool_boxes(feats[:4], boxes, 7))
            logits, deltas = heads.box_predictor[k].cls_score(x), heads.box_predictor[k].bbox_pred(x)
            probs.append(F.softmax(logits, dim=-1))
        scores = (sum(probs) / len(probs))[:, :-1]  # mean over stages, background dropped
        final = [clip_boxes(apply_deltas(d, b, cfg.cascade_weights[-1]), h, w)
                 for d, b, (h, w) in zip(deltas.split(counts), boxes, sizes)]
        out = []
        for bx, sc in zip(final, scores.split(counts)):
            i, c = torch.nonzero(sc > score_thresh, as_tuple=True)
            keep = batched_nms(bx[i], sc[i, c], c, cfg.nms)[: cfg.detections_per_image]
            out.append(Instances(bx[i][keep], sc[i, c][keep], c[keep]))
        return out

    @torch.inference_mode()
    def forward(self, pixel_values: torch.Tensor, score_thresh: float | None = None) -> ViTDetOutput:
        """pixel_values: B×3×H×W normalised. Padded with zeros to the config's square (detectron2's square_pad);
        a larger input is padded to its own square instead (a multiple of the patch size)."""
        b, _, h, w = pixel_values.shape
        p = self.config.patch_size
        s = max(self.config.image_size, -(-max(h, w) // p) * p)
        x = F.pad(pixel_values, (0, s - w, 0, s - h))
        feats = self.backbone(x)
        sizes = [(h, w)] * b
        proposals = self._proposals(feats, sizes)
        thresh = self.config.score_thresh if score_thresh is None else score_thresh
        return ViTDetOutput(self._cascade(feats, proposals, sizes, thresh))
