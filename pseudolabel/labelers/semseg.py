"""Semantic segmentation, COCO panoptic label space (133 classes), Mask2Former: tok_semseg@224.

transformers ``Mask2FormerForUniversalSegmentation`` fed as Mask2Former's COCO setting: the shorter side resized to
800 (the longer capped at 1333, aspect ratio kept), ImageNet-normalised, zero-padded to a multiple of 32. Semantic
map = argmax over classes of Σ_q softmax(class_q)[:-1] · sigmoid(mask_q) (Mask2Former's semantic inference), with
the mask logits upsampled to the padded input, cropped to the image and resized to the stored image size
(bilinear, as detectron2's ``sem_seg_postprocess``). Stored as PNG uint8 H×W with COCO-panoptic id + 1
(0 = none; fourm_core.coco). Oracle (``profile: oracle``): a synthetic scene's ground-truth map (same ids), stored
the same way.
Production: ``facebook/mask2former-swin-base-coco-panoptic`` (the 4M papers' Swin-B COCO-panoptic model).
"""

from __future__ import annotations

from typing import ClassVar

import cv2
import pyarrow as pa
from pydantic import Field

from fourm_core.coco import NUM_PANOPTIC

from ..codecs import png_encode
from ..spec import RGB, Batch
from .model_base import IMAGENET_MEAN, IMAGENET_STD, HFModelSettings, ModelLabeler, OracleSettings, gt_array, normalize

SIZE_DIVISIBILITY = 32  # Swin's 4 stages of 2× downsampling after the 4× patch embedding


class SemsegSettings(OracleSettings):
    model: str = "facebook/mask2former-swin-base-coco-panoptic"
    short_side: int = Field(800, gt=0, description="network input's shorter side (Mask2Former COCO: 800)")
    max_side: int = Field(1333, gt=0, description="cap on the longer side (Mask2Former COCO: 1333)")


def input_size(h: int, w: int, short_side: int, max_side: int) -> tuple[int, int]:
    """detectron2's ResizeShortestEdge: (h, w) scaled so the shorter side is ``short_side`` unless that makes the
    longer exceed ``max_side``."""
    scale = short_side / min(h, w)
    if max(h, w) * scale > max_side:
        scale = max_side / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def batch_inputs(images: list, short_side: int, max_side: int, device: str = "cpu"):
    """uint8 H×W×3 images -> (B×3×Hp×Wp float32 padded batch on ``device``, per-image (h, w) inside it).

    The resized images cross to the device as uint8 and are normalised there (``normalize``: NumPy's float32
    operations in NumPy's order); the padding is then set to 0, as detectron2 pads after normalising."""
    import numpy as np

    sizes = [input_size(*im.shape[:2], short_side, max_side) for im in images]
    hp = -(-max(h for h, _ in sizes) // SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY
    wp = -(-max(w for _, w in sizes) // SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY
    u8 = np.zeros((len(images), hp, wp, 3), np.uint8)
    for i, (im, (h, w)) in enumerate(zip(images, sizes)):
        u8[i, :h, :w] = cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR)
    x = normalize(u8, IMAGENET_MEAN, IMAGENET_STD, device)
    for i, (h, w) in enumerate(sizes):
        x[i, :, h:] = 0.0
        x[i, :, :h, w:] = 0.0
    return x, sizes


class SemsegLabeler(ModelLabeler):
    name: ClassVar[str] = "semseg"
    supports_autocast: ClassVar[bool] = True  # the forward runs in self.inference()
    outputs: ClassVar[tuple[str, ...]] = ("semseg",)
    needs: ClassVar[tuple[str, ...]] = (RGB,)
    code_version: ClassVar[str] = "3"  # 2: Mask2Former's COCO input size (short side 800, aspect kept); 3: oracle
    Settings: ClassVar[type[HFModelSettings]] = SemsegSettings
    default_batch_size: ClassVar[int] = 4

    @staticmethod
    def tiny_config():
        from transformers import Mask2FormerConfig, SwinConfig

        swin = SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
        return Mask2FormerConfig(backbone_config=swin, hidden_dim=32, feature_size=32, mask_feature_size=32,
                                 num_queries=8, encoder_layers=1, decoder_layers=2, dim_feedforward=64,
                                 encoder_feedforward_dim=64, num_attention_heads=2, num_labels=NUM_PANOPTIC)

    def build_tiny(self):
        from transformers import Mask2FormerForUniversalSegmentation

        return Mask2FormerForUniversalSegmentation(self.tiny_config())

    def build_full(self):
        from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

        swin = SwinConfig(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
        return Mask2FormerForUniversalSegmentation(Mask2FormerConfig(backbone_config=swin, num_labels=NUM_PANOPTIC))

    def load_dir(self, path: str):
        from transformers import Mask2FormerForUniversalSegmentation

        model = Mask2FormerForUniversalSegmentation.from_pretrained(path, use_safetensors=True)
        if model.config.num_labels != NUM_PANOPTIC:
            raise ValueError(f"expected a COCO-panoptic model with {NUM_PANOPTIC} classes, got {model.config.num_labels}")
        return model

    def schema(self) -> dict[str, pa.Schema]:
        return {"semseg": pa.schema([("semseg", pa.binary()), ("height", pa.int32()), ("width", pa.int32())])}

    def label_batch(self, batch: Batch) -> list:
        import torch
        import torch.nn.functional as F

        x, sizes = batch_inputs(batch.rgb, self.settings.short_side, self.settings.max_side, self.device)
        with self.inference():
            out = self.model(pixel_values=x)
        with torch.inference_mode():  # Mask2Former's semantic inference in fp32, also under autocast: bf16
            masks = F.interpolate(out.masks_queries_logits.float(), size=x.shape[-2:], mode="bilinear",
                                  align_corners=False)
            classes = out.class_queries_logits.float().softmax(-1)[..., :-1]  # drop the null class
            ids = []  # each image's oh × ow map, queued on the device; one wait at the first copy back
            for i, (rgb, (h, w)) in enumerate(zip(batch.rgb, sizes)):
                m = F.interpolate(masks[i:i + 1, :, :h, :w], size=rgb.shape[:2], mode="bilinear", align_corners=False)
                seg = torch.einsum("qc,qhw->chw", classes[i], m[0].sigmoid()).argmax(0)  # 0..132
                ids.append((seg + 1).to(torch.uint8))
        return self.post_map(_row, [t.cpu().numpy() for t in ids])

    def oracle_label(self, gt: dict) -> dict:
        return _row(gt_array(gt, "semseg"))


def _row(ids) -> dict:
    """uint8 H×W COCO-panoptic id + 1 -> the ``labels/semseg`` cells (PNG)."""
    return {"semseg": {"semseg": png_encode(ids.astype("uint8")), "height": ids.shape[0], "width": ids.shape[1]}}
