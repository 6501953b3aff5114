"""Canny edges on the RGB image (OpenCV), the source of tok_canny_edge@224.

Grey = OpenCV's BT.601 luma of the RGB image; optional Gaussian blur (sigma, 0 = none) before
``cv2.Canny(grey, low, high, apertureSize, L2gradient)``. Defaults 100/200 with a 3×3 Sobel aperture
and the L1 gradient norm are OpenCV's tutorial values; they keep texture edges on 256-px images.
Stored as a PNG (uint8 0/255, H×W at the stored image size).
"""

from __future__ import annotations

from typing import ClassVar

import cv2
import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from ..codecs import png_encode
from ..spec import RGB, Batch, Labeler, LabelerSettings, Resources


class CannySettings(LabelerSettings):
    low: float = Field(100.0, ge=0, description="hysteresis low threshold (gradient magnitude)")
    high: float = Field(200.0, ge=0, description="hysteresis high threshold")
    aperture: int = Field(3, description="Sobel aperture: 3, 5 or 7")
    l2_gradient: bool = False
    blur_sigma: float = Field(0.0, ge=0, description="Gaussian blur sigma before Canny; 0 = no blur")

    @model_validator(mode="after")
    def _check(self) -> "CannySettings":
        if self.aperture not in (3, 5, 7):
            raise ValueError("aperture must be 3, 5 or 7")
        if self.low > self.high:
            raise ValueError("low threshold must not exceed high threshold")
        return self


def canny_edges(rgb: np.ndarray, s: CannySettings) -> np.ndarray:
    """uint8 H×W×3 -> uint8 H×W with 255 on edges."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if s.blur_sigma > 0:
        grey = cv2.GaussianBlur(grey, (0, 0), s.blur_sigma)
    return cv2.Canny(grey, s.low, s.high, apertureSize=s.aperture, L2gradient=s.l2_gradient)


class CannyLabeler(Labeler):
    name: ClassVar[str] = "canny"
    outputs: ClassVar[tuple[str, ...]] = ("canny_edge",)
    needs: ClassVar[tuple[str, ...]] = (RGB,)
    code_version: ClassVar[str] = "1"
    Settings: ClassVar[type[LabelerSettings]] = CannySettings
    default_batch_size: ClassVar[int] = 32
    resources: ClassVar[Resources] = Resources(num_cpus=1, memory_mb=256)

    def schema(self) -> dict[str, pa.Schema]:
        return {"canny_edge": pa.schema([("edges", pa.binary()), ("height", pa.int32()), ("width", pa.int32()),
                                         ("edge_fraction", pa.float32())])}

    def label_batch(self, batch: Batch) -> list:
        out = []
        for rgb in batch.rgb:
            e = canny_edges(rgb, self.settings)
            out.append({"canny_edge": {"edges": png_encode(e), "height": e.shape[0], "width": e.shape[1],
                                       "edge_fraction": float((e > 0).mean())}})
        return out
