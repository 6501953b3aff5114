"""Depth with Omnidata v2 DPT-Hybrid (transformers ``DPTForDepthEstimation``, hybrid): the source of tok_depth@224.

Omnidata's input handling (:mod:`.omnidata`: resize shorter side to 384 + centre-crop windows, mean = std = 0.5);
the prediction is resized back to the stored image size and stored as float16 H×W (``depth``), as the model emits
it (relative depth; the tokenizer robust-standardises per image, 4M-FACTS §1, so the affine ambiguity does not
matter). Oracle (``profile: oracle``): a synthetic scene's ground-truth depth (camera-frame z in metres), stored
the same way. Production: ``omnidata_dpt_depth_v2.ckpt`` converted with ``python -m pseudolabel convert-omnidata
omnidata_dpt_depth_v2.ckpt models/omnidata_depth --task depth`` (docs/labelers.md).
"""

from __future__ import annotations

from typing import ClassVar

import pyarrow as pa

from ..codecs import f16_encode
from ..spec import RGB, Batch
from .dpt_common import DPTLabelerBase, DPTSettings
from .model_base import gt_array
from .omnidata import DEPTH_MEAN, DEPTH_STD


class DepthSettings(DPTSettings):
    model: str = "./models/omnidata_depth"  # python -m pseudolabel convert-omnidata ... --task depth


class DepthLabeler(DPTLabelerBase):
    name: ClassVar[str] = "depth"
    outputs: ClassVar[tuple[str, ...]] = ("depth",)
    needs: ClassVar[tuple[str, ...]] = (RGB,)
    code_version: ClassVar[str] = "3"  # 2: Omnidata DPT-hybrid, resize + centre-crop windows; 3: oracle path
    Settings: ClassVar[type[DPTSettings]] = DepthSettings
    task: ClassVar[str] = "depth"
    mean, std = DEPTH_MEAN, DEPTH_STD
    align_windows: ClassVar[bool] = True

    def load_dir(self, path: str):
        from transformers import DPTForDepthEstimation

        return DPTForDepthEstimation.from_pretrained(path, use_safetensors=True)

    def schema(self) -> dict[str, pa.Schema]:
        return {"depth": pa.schema([("depth", pa.binary()), ("height", pa.int32()), ("width", pa.int32())])}

    def label_batch(self, batch: Batch) -> list:
        return self.post_map(lambda d: _row(d[0]), self.predict(batch.rgb))

    def oracle_label(self, gt: dict) -> dict:
        return _row(gt_array(gt, "depth"))


def _row(depth) -> dict:
    """float H×W depth -> the ``labels/depth`` cells (float16 H×W)."""
    return {"depth": {"depth": f16_encode(depth), "height": depth.shape[0], "width": depth.shape[1]}}
