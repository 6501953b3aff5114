"""Random-resized-crop + flip settings shared by every modality of a sample (tokenize stage, training loader).

A crop is a pure function of (settings, seed, sample_key, crop index), so each modality's unit can
recompute the same crops independently (no ordering between units), and ``tokens/_crops`` records them
once per shard for the training data loader.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from fourm_core.config import StrictModel
from pydantic import Field


class CropConfig(StrictModel):
    n_crops: int = Field(1, gt=0, le=32767)
    scale: tuple[float, float] = (0.8, 1.0)  # crop area as a fraction of the image
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect ratio range (log-uniform)
    flip_prob: float = Field(0.5, ge=0, le=1)
    seed: int = 0


@dataclass(frozen=True)
class Crop:
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1), normalised to [0, 1]
    flip: bool


def crop_for(cfg: CropConfig, sample_key: str, index: int) -> Crop:
    """The ``index``-th crop of ``sample_key``: deterministic in (cfg, key, index)."""
    digest = hashlib.sha256(f"{cfg.seed}/{sample_key}/{index}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    area = rng.uniform(*cfg.scale)
    ratio = math.exp(rng.uniform(math.log(cfg.ratio[0]), math.log(cfg.ratio[1])))
    w, h = min(1.0, math.sqrt(area * ratio)), min(1.0, math.sqrt(area / ratio))
    x0, y0 = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
    return Crop((float(x0), float(y0), float(x0 + w), float(y0 + h)), bool(rng.random() < cfg.flip_prob))


def apply_crop(a: np.ndarray, crop: Crop, target: str, channels: int | None = None) -> np.ndarray:
    """Crop (and flip) one raw label array (layouts in ``normalize``). Vectors pass through unchanged."""
    if target in ("pose", "global"):
        return a
    channel_first = target == "features" and channels is not None and a.shape[0] == channels and a.shape[-1] != channels
    ya, xa = (1, 2) if channel_first else (0, 1)
    h, w = a.shape[ya], a.shape[xa]
    x0, y0, x1, y1 = crop.box
    r0, r1 = int(round(y0 * h)), max(int(round(y0 * h)) + 1, int(round(y1 * h)))
    c0, c1 = int(round(x0 * w)), max(int(round(x0 * w)) + 1, int(round(x1 * w)))
    index = [slice(None)] * a.ndim
    index[ya], index[xa] = slice(r0, min(r1, h)), slice(c0, min(c1, w))
    out = a[tuple(index)]
    if crop.flip:
        out = np.flip(out, axis=xa)
        if target == "normal":  # mirroring the image mirrors the surface: the x component changes sign
            out = out.copy()
            out[..., 0] *= -1
    return np.ascontiguousarray(out)
