"""How pseudo labels are stored in Parquet cells, and the one way to decode them.

The labelers write, the tokenizers and the viewer read; both go through this module so the storage
format has one definition. Integer maps are PNG (lossless), float maps and features raw little-endian
float16, ingested images JPEG/PNG/WebP. Column layout per artifact: docs/labelers.md.
"""

from __future__ import annotations

import io
from typing import Any

import cv2
import numpy as np

from .image_decode import decode_image
from .modalities import MODALITIES


def png_encode(arr: np.ndarray) -> bytes:
    """uint8 H×W or H×W×3 (RGB) -> PNG bytes (lossless)."""
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr, np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def png_decode(data: bytes) -> np.ndarray:
    """PNG bytes -> uint8 H×W or H×W×3 (RGB)."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError("not a PNG")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB) if arr.ndim == 3 else arr


def f16_encode(arr: np.ndarray) -> bytes:
    return np.ascontiguousarray(arr, dtype="<f2").tobytes()


def f16_decode(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(data, dtype="<f2").reshape(shape).astype(np.float32)


def npy_decode(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _grid_of(label: str) -> int:
    for m in MODALITIES.values():
        if m.label == label and m.grid:
            return m.grid[0]
    raise KeyError(f"no modality with a token grid is derived from label {label!r}")


# label -> the columns a decoder needs (besides sample_key)
LABEL_COLUMNS: dict[str, tuple[str, ...]] = {
    "images": ("image",),
    "canny_edge": ("edges",),
    "sam_edge": ("edges",),
    "depth": ("depth", "height", "width"),
    "normal": ("normal",),
    "semseg": ("semseg",),
    "clip_features": ("features",),
    "dinov2_features": ("features",),
    "imagebind_features": ("features",),
    "dinov2_global": ("embedding",),
    "imagebind_global": ("embedding",),
}


def label_columns(label: str) -> tuple[str, ...]:
    """Columns to read to decode ``label`` (a label without a known layout is one ``.npy`` column)."""
    return LABEL_COLUMNS.get(label, (label,))


def decode_label(label: str, row: dict[str, Any]) -> np.ndarray | None:
    """One stored row of ``labels/<label>`` (or ``images``) -> the label array, None if the cell is empty.

    Shapes: images/normal (H, W, 3); edges/semseg (H, W) uint8; depth (H, W) float32; features
    (g, g, C) float32 with g the modality's token grid; global embeddings (D,).
    """
    cols = label_columns(label)
    if any(row.get(c) is None for c in cols):
        return None
    if label == "images":
        return decode_image(row["image"])
    if label in ("canny_edge", "sam_edge"):
        return png_decode(row["edges"])
    if label == "semseg":
        return png_decode(row["semseg"])
    if label == "depth":
        return f16_decode(row["depth"], (row["height"], row["width"]))
    if label == "normal":
        n = png_decode(row["normal"]).astype(np.float32) / 127.5 - 1.0  # stored as round((n + 1) * 127.5)
        return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6)
    if label.endswith("_features"):
        g = row.get("grid") or _grid_of(label)  # an explicit grid (small development maps) wins
        data = row["features"]
        return f16_decode(data, (g, g, len(data) // (2 * g * g)))
    if label.endswith("_global"):
        return f16_decode(row["embedding"], (-1,))
    return npy_decode(row[label])  # development/synthetic labels: one .npy array per cell


def npy_encode(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def encode_label(label: str, arr: np.ndarray) -> dict[str, Any]:
    """The inverse of :func:`decode_label`: one label array -> the row cells the labelers store."""
    a = np.asarray(arr)
    if label == "images":
        return {"image": png_encode(a.astype(np.uint8)), "height": a.shape[0], "width": a.shape[1]}
    if label in ("canny_edge", "sam_edge"):
        return {"edges": png_encode(a.astype(np.uint8))}
    if label == "semseg":
        return {"semseg": png_encode(a.astype(np.uint8))}
    if label == "depth":
        return {"depth": f16_encode(a), "height": a.shape[0], "width": a.shape[1]}
    if label == "normal":
        return {"normal": png_encode(np.round((np.clip(a, -1, 1) + 1) * 127.5).astype(np.uint8))}
    if label.endswith("_features"):
        return {"features": f16_encode(a), "grid": a.shape[0]}
    if label.endswith("_global"):
        return {"embedding": f16_encode(a.reshape(-1))}
    return {label: npy_encode(a)}
