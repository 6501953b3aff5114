"""DINOv2-B/14 patch features (16×16×768 at 224²) and CLS embedding (768): tok_dinov2@224, tok_dinov2_global.

Input: the whole stored image resized to 224² (bilinear), ImageNet mean/std. Features: the last layer's
tokens after the final LayerNorm (``last_hidden_state``): patches -> ``features``, CLS -> ``global``.
Production checkpoint: ``facebook/dinov2-base`` (Apache-2.0).
"""

from __future__ import annotations

from typing import ClassVar

import pyarrow as pa

from ..spec import RGB, Batch
from .model_base import HFModelSettings, ModelLabeler, f16_bytes, host_f16, resize_batch, IMAGENET_MEAN, IMAGENET_STD


class Dinov2Settings(HFModelSettings):
    model: str = "facebook/dinov2-base"
    image_size: int = 224


class Dinov2Labeler(ModelLabeler):
    name: ClassVar[str] = "dinov2"
    supports_autocast: ClassVar[bool] = True  # the forward runs in self.inference()
    outputs: ClassVar[tuple[str, ...]] = ("dinov2_features", "dinov2_global")
    needs: ClassVar[tuple[str, ...]] = (RGB,)
    code_version: ClassVar[str] = "1"
    Settings: ClassVar[type[HFModelSettings]] = Dinov2Settings
    default_batch_size: ClassVar[int] = 8
    heavy_output: ClassVar[bool] = True
    production_model: ClassVar[str] = "facebook/dinov2-base"

    def _cfg(self):
        from transformers import Dinov2Config

        if self.model is not None:
            return self.model.config
        r = self.resolved()
        return self.tiny_config() if r.is_tiny else Dinov2Config.from_pretrained(r.local_dir)

    @staticmethod
    def tiny_config():
        from transformers import Dinov2Config

        return Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            patch_size=14, image_size=224)

    def build_tiny(self):
        from transformers import Dinov2Model

        return Dinov2Model(self.tiny_config())

    def build_full(self):
        from transformers import Dinov2Config, Dinov2Model

        return Dinov2Model(Dinov2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                        intermediate_size=3072, patch_size=14, image_size=518))

    def load_dir(self, path: str):
        from transformers import Dinov2Model

        return Dinov2Model.from_pretrained(path, use_safetensors=True)

    def grid(self) -> int:
        return self.settings.image_size // self._cfg().patch_size

    def schema(self) -> dict[str, pa.Schema]:
        c, g = self._cfg().hidden_size, self.grid()
        return {"dinov2_features": pa.schema([("features", pa.binary(g * g * c * 2))]),
                "dinov2_global": pa.schema([("embedding", pa.binary(c * 2))])}

    def label_batch(self, batch: Batch) -> list:
        x = resize_batch(batch.rgb, self.settings.image_size, IMAGENET_MEAN, IMAGENET_STD, self.device)
        with self.inference():
            h = host_f16(self.model(pixel_values=x).last_hidden_state)  # B × (1 + g²) × C
        return [{"dinov2_features": {"features": f16_bytes(h[i, 1:])}, "dinov2_global": {"embedding": f16_bytes(h[i, 0])}}
                for i in range(len(batch))]
