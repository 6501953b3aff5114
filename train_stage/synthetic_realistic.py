"""Synthetic shards with the *costs* of production ones, for loader benchmarks (``make_token_shards(realistic=True)``).

What makes a production shard expensive to read and batch, reproduced here (the content is noise, nothing
to learn):

* image-like and global tokens uniform over the modality's vocabulary: real VQ codes barely compress, so
  Parquet decodes every byte (the learnable synthetic grids compress ~20x);
* sequences (det, metadata, colour palette, poses, SAM instances) of 1/8 to all of their ``max_tokens`` ids,
  one row per crop; the caption one row per sample (crop 0), as the tokenize stage writes them;
* crops drawn like the tokenize stage's (``CropConfig`` defaults: 80-100 % of the area, 3:4-4:3, half
  flipped), recorded in ``tokens/_crops``;
* ``images``: JPEG (quality 95) with the shorter side 256 px and the longer 256-384 px, the ingest defaults;
* ``labels/t5_caption``: 8-40 rows of 4096-d float16 per caption (a T5-XXL caption embedding).
"""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow as pa

from fourm_core.crops import CropConfig, crop_for
from fourm_core.label_codec import f16_encode
from fourm_core.modalities import TEXT_VOCAB, ModalityKind, get_modality

CROPS_ARTIFACT = "tokens/_crops"
FIRST_TEXT_ID = 204  # WordPiece ids below are special / sentinel tokens


def _list_column(values: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """list<int16> from flat values and per-row lengths (no per-row Python)."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.astype(np.int16)))


def _image(rng: np.random.Generator) -> bytes:
    """A 256 x 256-384 RGB JPEG: a smooth random field plus sensor-like noise (natural-image entropy)."""
    w = int(rng.integers(256, 385))
    coarse = rng.integers(0, 256, (8, 12, 3)).astype(np.uint8)
    smooth = cv2.resize(coarse, (w, 256), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    img = np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def realistic_tables(modalities: list[str], keys: list[str], n_crops: int, rng: np.random.Generator
                     ) -> dict[str, pa.Table]:
    """Every artifact ``make_token_shards`` commits for ``modalities``, with production-like content."""
    n = len(keys)
    key_col = pa.array(keys, pa.string())
    per_crop_keys = pa.array(np.repeat(np.array(keys, dtype=object), n_crops), pa.string())
    crop_ids = pa.array(np.tile(np.arange(n_crops), n), pa.int16())
    tables: dict[str, pa.Table] = {}
    for m in modalities:
        mod = get_modality(m)
        if mod.kind == ModalityKind.PIXELS:
            tables[mod.label_artifact] = pa.table({"sample_key": key_col,
                                                   "image": pa.array([_image(rng) for _ in keys], pa.binary())})
        elif mod.kind == ModalityKind.EMBEDDING_SEQ:
            lengths = rng.integers(8, 41, n)
            rows = [f16_encode(rng.standard_normal((k, mod.feature_dim), dtype=np.float32)) for k in lengths]
            tables[mod.label_artifact] = pa.table({
                "sample_key": key_col, "embedding": pa.array(rows, pa.binary()),
                "n_tokens": pa.array(lengths, pa.int16()), "dim": pa.array([mod.feature_dim] * n, pa.int16())})
        elif mod.kind == ModalityKind.SEQUENCE:
            one = m == "caption"  # one caption for every crop
            rows = n if one else n * n_crops
            lengths = rng.integers(max(1, mod.max_tokens // 8), mod.max_tokens + 1, rows)
            values = rng.integers(FIRST_TEXT_ID, TEXT_VOCAB, int(lengths.sum()))
            tables[mod.token_artifact] = pa.table({
                "sample_key": key_col if one else per_crop_keys,
                "crop": pa.array(np.zeros(n, np.int16)) if one else crop_ids,
                "tokens": _list_column(values, lengths)})
        else:  # image-like grids and global tokens: fixed length, uniform codes
            rows = n * n_crops
            values = rng.integers(0, mod.vocab_size, rows * mod.max_tokens)
            tables[mod.token_artifact] = pa.table({"sample_key": per_crop_keys, "crop": crop_ids,
                                                   "tokens": _list_column(values, np.full(rows, mod.max_tokens))})
    cfg = CropConfig(n_crops=n_crops)
    crops = [crop_for(cfg, k, c) for k in keys for c in range(n_crops)]
    tables[CROPS_ARTIFACT] = pa.table({"sample_key": per_crop_keys, "crop": crop_ids,
                                       "box": pa.array([list(c.box) for c in crops], pa.list_(pa.float32(), 4)),
                                       "flip": pa.array([c.flip for c in crops], pa.bool_())})
    return tables
