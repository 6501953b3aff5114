"""Semantic segmentation, COCO panoptic label space (133 classes), Mask2Former: tok_semseg@224.

transformers ``Mask2FormerForUniversalSegmentation``; semantic map = argmax over classes of
Σ_q softmax(class_q)[:-1] · sigmoid(mask_q) (Mask2Former's semantic inference, as transformers'
``post_process_semantic_segmentation``), at the network input size, then nearest-resized to the stored
image size. Stored as PNG uint8 H×W with COCO-panoptic id + 1 (0 = none; fourm_core.coco).
Production: ``facebook/mask2former-swin-base-coco-panoptic`` (the 4M papers' Swin-B COCO-panoptic model).
"""

from __future__ import annotations

from typing import ClassVar

import cv2
import pyarrow as pa

from fourm_core.coco import NUM_PANOPTIC

from ..codecs import png_encode
from ..spec import RGB, Batch
from .model_base import HFModelSettings, ModelLabeler, resize_batch, IMAGENET_MEAN, IMAGENET_STD


class SemsegSettings(HFModelSettings):
    model: str = "facebook/mask2former-swin-base-coco-panoptic"
    image_size: int = 384


class SemsegLabeler(ModelLabeler):
    name: ClassVar[str] = "semseg"
    outputs: ClassVar[tuple[str, ...]] = ("semseg",)
    needs: ClassVar[tuple[str, ...]] = (RGB,)
    code_version: ClassVar[str] = "1"
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

        s = self.settings.image_size
        x = resize_batch(batch.rgb, s, IMAGENET_MEAN, IMAGENET_STD).to(self.device)
        with torch.inference_mode():
            out = self.model(pixel_values=x)
            masks = F.interpolate(out.masks_queries_logits, size=(s, s), mode="bilinear", align_corners=False)
            classes = out.class_queries_logits.softmax(-1)[..., :-1]  # drop the null class
            seg = torch.einsum("bqc,bqhw->bchw", classes, masks.sigmoid()).argmax(1)  # B × s × s, 0..132
        seg = (seg + 1).to(torch.uint8).cpu().numpy()
        res = []
        for i, rgb in enumerate(batch.rgb):
            h, w = rgb.shape[:2]
            m = cv2.resize(seg[i], (w, h), interpolation=cv2.INTER_NEAREST)
            res.append({"semseg": {"semseg": png_encode(m), "height": h, "width": w}})
        return res
