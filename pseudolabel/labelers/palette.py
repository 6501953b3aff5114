"""Colour palettes with k = 1…7 colours per image (the source of the color_palette modality).

Method: k-means in CIE L*a*b* (perceptually uniform, so cluster centres are perceptual averages) over
the image downsampled to at most ``max_pixels`` pixels (area interpolation), OpenCV ``cv2.kmeans`` with
k-means++ seeding, ``attempts`` restarts and a fixed RNG seed (deterministic). Centres convert back to
sRGB uint8; within a palette colours are ordered by cluster size, largest first. Stored as one
``binary(84)`` cell: palette k occupies bytes [3·k(k−1)/2, 3·k(k+1)/2) as k RGB triplets.
"""

from __future__ import annotations

from typing import ClassVar

import cv2
import numpy as np
import pyarrow as pa
from pydantic import Field

from ..spec import RGB, Batch, Labeler, LabelerSettings, Resources

K_MAX = 7
PALETTE_BYTES = 3 * K_MAX * (K_MAX + 1) // 2  # 84


class PaletteSettings(LabelerSettings):
    max_pixels: int = Field(4096, gt=0, description="downsample to at most this many pixels before k-means")
    attempts: int = Field(3, gt=0, description="k-means restarts (best compactness wins)")
    seed: int = 0


def palettes(rgb: np.ndarray, s: PaletteSettings) -> list[np.ndarray]:
    """uint8 H×W×3 -> [k×3 uint8 RGB for k in 1..7], colours ordered by cluster size (descending)."""
    h, w = rgb.shape[:2]
    scale = min(1.0, (s.max_pixels / (h * w)) ** 0.5)
    if scale < 1.0:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab).reshape(-1, 3)
    n_distinct = len(np.unique(lab, axis=0))
    out = []
    for k in range(1, K_MAX + 1):
        kk = min(k, n_distinct)  # fewer distinct colours than k: repeat the largest clusters
        cv2.setRNGSeed(s.seed)
        criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-3)
        _, labels, centres = cv2.kmeans(lab, kk, None, criteria, s.attempts, cv2.KMEANS_PP_CENTERS)
        counts = np.bincount(labels.ravel(), minlength=kk)
        order = np.argsort(-counts, kind="stable")
        centres = centres[order]
        back = cv2.cvtColor(centres.reshape(1, -1, 3).astype(np.float32), cv2.COLOR_Lab2RGB).reshape(-1, 3)
        colours = np.clip(np.rint(back * 255.0), 0, 255).astype(np.uint8)
        if kk < k:
            colours = np.concatenate([colours, np.repeat(colours[:1], k - kk, axis=0)])
        out.append(colours)
    return out


def pack(pals: list[np.ndarray]) -> bytes:
    return b"".join(p.astype(np.uint8).tobytes() for p in pals)


def unpack(data: bytes) -> list[np.ndarray]:
    """binary(84) cell -> [k×3 uint8 for k in 1..7]."""
    arr = np.frombuffer(data, np.uint8)
    return [arr[3 * k * (k - 1) // 2: 3 * k * (k + 1) // 2].reshape(k, 3) for k in range(1, K_MAX + 1)]


class PaletteLabeler(Labeler):
    name: ClassVar[str] = "color_palette"
    outputs: ClassVar[tuple[str, ...]] = ("color_palette",)
    needs: ClassVar[tuple[str, ...]] = (RGB,)
    code_version: ClassVar[str] = "1"
    Settings: ClassVar[type[LabelerSettings]] = PaletteSettings
    default_batch_size: ClassVar[int] = 32
    resources: ClassVar[Resources] = Resources(num_cpus=1, memory_mb=256)

    def schema(self) -> dict[str, pa.Schema]:
        return {"color_palette": pa.schema([("palettes", pa.binary(PALETTE_BYTES))])}

    def label_batch(self, batch: Batch) -> list:
        return [{"color_palette": {"palettes": pack(palettes(rgb, self.settings))}} for rgb in batch.rgb]
