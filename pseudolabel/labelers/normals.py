"""Surface normals with a DPT whose head ends in 3 channels (Omnidata-compatible): tok_normal@224.

Architecture: transformers' DPT backbone + neck + the DPT depth head with its last 1×1 conv producing 3
channels instead of 1, followed by the head's ReLU — exactly Omnidata's ``DPTDepthModel(num_channels=3)``.
Output in [0, 1] (clamped, as Omnidata's demo does) maps to unit normals n = 2x − 1 (renormalised),
camera frame as Omnidata defines it. Stored as PNG uint8 H×W×3 with value round((n + 1) · 127.5).
Production: Omnidata v2 DPT-B-Hybrid normal weights converted to this layout (docs/labelers.md).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa

from ..codecs import png_encode
from ..spec import RGB, Batch
from .dpt_common import DPTLabelerBase, DPTSettings, full_dpt_config, resize_to, tiny_dpt_config


def _normals_class():
    from torch import nn
    from transformers import DPTForDepthEstimation

    class DPTForSurfaceNormals(DPTForDepthEstimation):
        """DPTForDepthEstimation with a 3-channel head (Omnidata's normal model layout)."""

        def __init__(self, config):
            super().__init__(config)
            self.head.head[4] = nn.Conv2d(32, 3, kernel_size=1, stride=1, padding=0)
            self.post_init()

    return DPTForSurfaceNormals


class NormalsSettings(DPTSettings):
    model: str = "EPFL-VILAB/omnidata-dpt-hybrid-normal"  # placeholder id: see docs/labelers.md (convert locally)


class NormalsLabeler(DPTLabelerBase):
    name: ClassVar[str] = "normals"
    outputs: ClassVar[tuple[str, ...]] = ("normal",)
    needs: ClassVar[tuple[str, ...]] = (RGB,)
    code_version: ClassVar[str] = "1"
    Settings: ClassVar[type[DPTSettings]] = NormalsSettings

    def build_tiny(self):
        return _normals_class()(tiny_dpt_config())

    def build_full(self):
        return _normals_class()(full_dpt_config())

    def load_dir(self, path: str):
        return _normals_class().from_pretrained(path, use_safetensors=True)

    def schema(self) -> dict[str, pa.Schema]:
        return {"normal": pa.schema([("normal", pa.binary()), ("height", pa.int32()), ("width", pa.int32())])}

    def label_batch(self, batch: Batch) -> list:
        out = self.forward(batch.rgb).clamp(0, 1)
        res = []
        for i, rgb in enumerate(batch.rgb):
            h, w = rgb.shape[:2]
            n = resize_to(out[i], h, w).transpose(1, 2, 0) * 2.0 - 1.0
            n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6)
            png = png_encode(np.clip(np.rint((n + 1.0) * 127.5), 0, 255).astype(np.uint8))
            res.append({"normal": {"normal": png, "height": h, "width": w}})
        return res
