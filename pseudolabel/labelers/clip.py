"""CLIP-B/16 last-layer patch features (14×14×512 at 224²): the source of tok_clip@224.

As in 4M: the last transformer layer's patch tokens go through CLIP's final LayerNorm (``post_layernorm``)
and the visual projection (768 -> 512), giving per-patch features in the joint embedding space.
Input: whole stored image resized to 224², ImageNet mean/std (not CLIP's: the reference computed the
features its released CLIP tokenizer was trained on from ImageNet-normalised pixels). Production: ``openai/clip-vit-base-patch16`` (MIT).
"""

from __future__ import annotations

from typing import ClassVar

import pyarrow as pa

from ..spec import RGB, Batch
from .model_base import IMAGENET_MEAN, IMAGENET_STD, HFModelSettings, ModelLabeler, f16_bytes, host_f16, resize_batch


class ClipSettings(HFModelSettings):
    model: str = "openai/clip-vit-base-patch16"


class ClipLabeler(ModelLabeler):
    name: ClassVar[str] = "clip"
    supports_autocast: ClassVar[bool] = True  # the forward runs in self.inference()
    outputs: ClassVar[tuple[str, ...]] = ("clip_features",)
    needs: ClassVar[tuple[str, ...]] = (RGB,)
    code_version: ClassVar[str] = "2"  # 2: ImageNet mean/std (as the released tokenizer)
    Settings: ClassVar[type[HFModelSettings]] = ClipSettings
    default_batch_size: ClassVar[int] = 8
    heavy_output: ClassVar[bool] = True
    production_model: ClassVar[str] = "openai/clip-vit-base-patch16"

    @staticmethod
    def tiny_config():
        from transformers import CLIPVisionConfig

        return CLIPVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                patch_size=16, image_size=224, projection_dim=16)

    def build_tiny(self):
        from transformers import CLIPVisionModelWithProjection

        return CLIPVisionModelWithProjection(self.tiny_config())

    def build_full(self):
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        return CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=768, num_hidden_layers=12,
                                                              num_attention_heads=12, intermediate_size=3072,
                                                              patch_size=16, image_size=224, projection_dim=512))

    def load_dir(self, path: str):
        from transformers import CLIPVisionModelWithProjection

        return CLIPVisionModelWithProjection.from_pretrained(path, use_safetensors=True)

    def _cfg(self):
        from transformers import CLIPVisionConfig

        if self.model is not None:
            return self.model.config
        r = self.resolved()
        return self.tiny_config() if r.is_tiny else CLIPVisionConfig.from_pretrained(r.local_dir)

    def schema(self) -> dict[str, pa.Schema]:
        c = self._cfg()
        g = c.image_size // c.patch_size
        return {"clip_features": pa.schema([("features", pa.binary(g * g * c.projection_dim * 2))])}

    def label_batch(self, batch: Batch) -> list:
        size = self.model.config.image_size
        x = resize_batch(batch.rgb, size, IMAGENET_MEAN, IMAGENET_STD, self.device)
        with self.inference():
            h = self.model.vision_model(pixel_values=x).last_hidden_state[:, 1:]  # B × g² × 768
            f = host_f16(self.model.visual_projection(self.model.vision_model.post_layernorm(h)))  # B × g² × 512
        return [{"clip_features": {"features": f16_bytes(f[i])}} for i in range(len(batch))]
