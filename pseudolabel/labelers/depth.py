"""Depth with a DPT (transformers ``DPTForDepthEstimation``): the source of tok_depth@224.

The network sees the whole stored image resized to its input size (mean = std = 0.5); its output is
resized back to the stored image size and stored as float16 H×W (``depth``), as the model emits it
(Omnidata depth: relative depth; MiDaS checkpoints: relative inverse depth — the tokenizer
robust-standardises per image, 4M-FACTS §1, so the affine ambiguity does not matter).
Production: Omnidata v2 DPT-B-Hybrid depth converted to transformers' DPT-hybrid layout (see
docs/labelers.md); the closest hub checkpoint in this layout is ``Intel/dpt-hybrid-midas``.
"""

from __future__ import annotations

from typing import ClassVar

import pyarrow as pa

from ..codecs import f16_encode
from ..spec import RGB, Batch
from .dpt_common import DPTLabelerBase, DPTSettings, full_dpt_config, resize_to, tiny_dpt_config


class DepthSettings(DPTSettings):
    model: str = "Intel/dpt-hybrid-midas"


class DepthLabeler(DPTLabelerBase):
    name: ClassVar[str] = "depth"
    outputs: ClassVar[tuple[str, ...]] = ("depth",)
    needs: ClassVar[tuple[str, ...]] = (RGB,)
    code_version: ClassVar[str] = "1"
    Settings: ClassVar[type[DPTSettings]] = DepthSettings
    production_model: ClassVar[str] = "Intel/dpt-hybrid-midas"

    def build_tiny(self):
        from transformers import DPTForDepthEstimation

        return DPTForDepthEstimation(tiny_dpt_config())

    def build_full(self):
        from transformers import DPTForDepthEstimation

        return DPTForDepthEstimation(full_dpt_config())

    def load_dir(self, path: str):
        from transformers import DPTForDepthEstimation

        return DPTForDepthEstimation.from_pretrained(path, use_safetensors=True)

    def schema(self) -> dict[str, pa.Schema]:
        return {"depth": pa.schema([("depth", pa.binary()), ("height", pa.int32()), ("width", pa.int32())])}

    def label_batch(self, batch: Batch) -> list:
        out = self.forward(batch.rgb)
        res = []
        for i, rgb in enumerate(batch.rgb):
            h, w = rgb.shape[:2]
            d = resize_to(out[i], h, w)[0]
            res.append({"depth": {"depth": f16_encode(d), "height": h, "width": w}})
        return res
