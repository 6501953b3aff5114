"""Label cell codecs: defined once in fourm_core.label_codec (labelers write, tokenizers and viewers read)."""

from __future__ import annotations

import numpy as np

from fourm_core.label_codec import decode_label, f16_decode, f16_encode, png_decode, png_encode

__all__ = ["png_encode", "png_decode", "f16_encode", "f16_decode", "depth_map", "normal_map", "semseg_map"]


def depth_map(row: dict) -> np.ndarray:
    """A `labels/depth` row -> float32 H×W relative depth."""
    return decode_label("depth", row)


def normal_map(row: dict) -> np.ndarray:
    """A `labels/normal` row -> float32 H×W×3 unit vectors."""
    return decode_label("normal", row)


def semseg_map(row: dict) -> np.ndarray:
    """A `labels/semseg` row -> uint8 H×W COCO-panoptic id + 1 (0 = none)."""
    return decode_label("semseg", row)
