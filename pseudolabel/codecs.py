"""How label maps are stored in Parquet cells: PNG for integer maps, raw little-endian float16 for floats."""

from __future__ import annotations

import cv2
import numpy as np


def png_encode(arr: np.ndarray) -> bytes:
    """uint8 H×W or H×W×3 (RGB) -> PNG bytes (lossless)."""
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr, np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def png_decode(data: bytes) -> np.ndarray:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError("not a PNG")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB) if arr.ndim == 3 else arr


def f16_encode(arr: np.ndarray) -> bytes:
    return np.ascontiguousarray(arr, dtype="<f2").tobytes()


def f16_decode(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(data, dtype="<f2").reshape(shape).astype(np.float32)


def depth_map(row: dict) -> np.ndarray:
    """A `labels/depth` row -> float32 H×W relative depth."""
    return f16_decode(row["depth"], (row["height"], row["width"]))


def normal_map(row: dict) -> np.ndarray:
    """A `labels/normal` row -> float32 H×W×3 unit vectors in [-1, 1] (stored as uint8 (n + 1) * 127.5)."""
    n = png_decode(row["normal"]).astype(np.float32) / 127.5 - 1.0
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6)


def semseg_map(row: dict) -> np.ndarray:
    """A `labels/semseg` row -> uint8 H×W COCO-panoptic id + 1 (0 = none)."""
    return png_decode(row["semseg"])
