"""Surface normals with Omnidata v2 DPT-Hybrid (normal model): tok_normal@224.

Architecture: transformers' DPT-hybrid backbone + neck + the DPT depth head with its last 1×1 conv producing 3
channels instead of 1, followed by the head's ReLU — exactly Omnidata's ``DPTDepthModel(num_channels=3)``. Inputs as
Omnidata's normal demo: resize + centre-crop windows of plain [0, 1] pixels (no mean/std). Output in [0, 1]
(clamped, as Omnidata's demo does) maps to unit normals n = 2x − 1 (renormalised), camera frame as Omnidata
defines it. Stored as PNG uint8 H×W×3 with value round((n + 1) · 127.5). Oracle (``profile: oracle``): a synthetic
scene's ground-truth normals (camera frame x right / y down / z forward), stored the same way. Production:
``omnidata_dpt_normal_v2.ckpt`` converted with ``python -m pseudolabel convert-omnidata omnidata_dpt_normal_v2.ckpt
models/omnidata_normal --task normal`` (docs/labelers.md).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa

from ..codecs import png_encode
from ..spec import RGB, Batch
from .dpt_common import DPTLabelerBase, DPTSettings
from .model_base import gt_array
from .omnidata import NORMAL_MEAN, NORMAL_STD, surface_normals_class


class NormalsSettings(DPTSettings):
    model: str = "./models/omnidata_normal"  # python -m pseudolabel convert-omnidata ... --task normal


class NormalsLabeler(DPTLabelerBase):
    name: ClassVar[str] = "normals"
    outputs: ClassVar[tuple[str, ...]] = ("normal",)
    needs: ClassVar[tuple[str, ...]] = (RGB,)
    code_version: ClassVar[str] = "3"  # 2: Omnidata DPT-hybrid, [0, 1] inputs, resize + centre-crop windows; 3: oracle
    Settings: ClassVar[type[DPTSettings]] = NormalsSettings
    task: ClassVar[str] = "normal"
    mean, std = NORMAL_MEAN, NORMAL_STD
    align_windows: ClassVar[bool] = False  # normals are absolute: windows are averaged as they are

    def load_dir(self, path: str):
        return surface_normals_class().from_pretrained(path, use_safetensors=True)

    def schema(self) -> dict[str, pa.Schema]:
        return {"normal": pa.schema([("normal", pa.binary()), ("height", pa.int32()), ("width", pa.int32())])}

    def label_batch(self, batch: Batch) -> list:
        return self.post_map(lambda out: _row(np.clip(out, 0, 1).transpose(1, 2, 0) * 2.0 - 1.0),
                             self.predict(batch.rgb))

    def oracle_label(self, gt: dict) -> dict:
        return _row(gt_array(gt, "normal").astype(np.float32))


def _row(n: np.ndarray) -> dict:
    """H×W×3 normals (renormalised here) -> the ``labels/normal`` cells: PNG of round((n + 1) · 127.5)."""
    n = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6)
    png = png_encode(np.clip(np.rint((n + 1.0) * 127.5), 0, 255).astype(np.uint8))
    return {"normal": {"normal": png, "height": n.shape[0], "width": n.shape[1]}}
