"""What the evaluation reads from the store: token rows, crops, pseudo labels, ground truth, images, and the
manifests of the committed tokenizers.

Every reader appends the manifest of each part it reads to ``inputs``: those are the evaluation unit's inputs
(its lineage and cache key). Only crop 0 of each sample is evaluated, as the tokenize stage cropped it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fourm_core.image_decode import decode_image
from fourm_core.label_codec import npy_decode
from fourm_core.manifest import Manifest
from fourm_core.modalities import get_modality, label_artifact
from fourm_core.store import ArtifactStore

from .config import EvalConfig

GT_ARTIFACT = "ground_truth"
GT_COLUMNS = {"depth": "depth", "normal": "normal", "semseg": "semseg"}  # tokenizer target -> ground_truth column


def tokenizer_name(modality: str) -> str | None:
    """The registry tokenizer of ``modality`` ('wordpiece+pose_vq' -> 'pose_vq'), or None if it has none."""
    from tokenize_stage.registry import sub_tokenizer

    tok = get_modality(modality).tokenizer
    return sub_tokenizer(tok) if tok else None


def tokenizer_manifest(store: ArtifactStore, cfg: EvalConfig, modality: str) -> Manifest | None:
    """The manifest of ``modality``'s committed tokenizer (``cfg.tokenizer_profile``), or None if not committed."""
    from tokenize_stage.train_tokenizer import tokenizer_artifact

    name = tokenizer_name(modality)
    if name is None:
        return None
    return store.read_manifest(cfg.tokenizer_dataset or cfg.dataset, tokenizer_artifact(name, cfg.tokenizer_profile),
                               None)


def read_tokens(store: ArtifactStore, dataset: str, modality: str, shards: list[int],
               inputs: list[Manifest]) -> dict[str, np.ndarray]:
    """key -> crop-0 token row (L,) int64 of ``modality`` in ``shards``."""
    art = get_modality(modality).token_artifact
    out: dict[str, np.ndarray] = {}
    for s in shards:
        m = store.read_manifest(dataset, art, s)
        if m is None:
            continue
        inputs.append(m)
        t = store.read_table(dataset, art, s, columns=["sample_key", "crop", "tokens"])
        for k, c, tok in zip(t.column("sample_key").to_pylist(), t.column("crop").to_pylist(),
                             t.column("tokens").to_pylist()):
            if c == 0:
                out[k] = np.asarray(tok, dtype=np.int64)
    return out


def token_shards(store: ArtifactStore, dataset: str, modality: str) -> list[int]:
    """The committed token shards of ``modality``."""
    return store.committed_shards(dataset, get_modality(modality).token_artifact)


def read_crops(store: ArtifactStore, dataset: str, shards: list[int], inputs: list[Manifest]) -> dict[str, Any]:
    """key -> crop 0 (tokenize_stage.crops.Crop) of the samples in ``shards`` (``tokens/_crops``)."""
    from tokenize_stage.crops import Crop

    out: dict[str, Any] = {}
    for s in shards:
        m = store.read_manifest(dataset, "tokens/_crops", s)
        if m is None:
            continue
        inputs.append(m)
        t = store.read_table(dataset, "tokens/_crops", s)
        for k, c, box, flip in zip(t.column("sample_key").to_pylist(), t.column("crop").to_pylist(),
                                   t.column("box").to_pylist(), t.column("flip").to_pylist()):
            if c == 0:
                out[k] = Crop(tuple(float(v) for v in box), bool(flip))
    return out


def read_label_arrays(store: ArtifactStore, dataset: str, label: str, keys: set[str] | None, shards: list[int],
                      inputs: list[Manifest]) -> dict[str, np.ndarray]:
    """key -> label array of ``keys`` (None: every sample) in ``shards``."""
    from tokenize_stage.labels import iter_label_rows

    out: dict[str, np.ndarray] = {}
    for s in shards:
        m = store.read_manifest(dataset, label_artifact(label), s)
        if m is None:
            continue
        inputs.append(m)
        for k, arr in iter_label_rows(store, dataset, label, s):
            if (keys is None or k in keys) and arr is not None:
                out[k] = arr
    return out


def read_ground_truth(store: ArtifactStore, dataset: str, column: str, keys: set[str] | None, shards: list[int],
                      inputs: list[Manifest]) -> dict[str, np.ndarray]:
    """key -> ground-truth array (``column``) of ``keys`` (None: every sample) in ``shards``."""
    out: dict[str, np.ndarray] = {}
    for s in shards:
        m = store.read_manifest(dataset, GT_ARTIFACT, s)
        if m is None or m.rows == 0:
            continue
        inputs.append(m)
        t = store.read_table(dataset, GT_ARTIFACT, s, columns=["sample_key", column])
        for k, v in zip(t.column("sample_key").to_pylist(), t.column(column).to_pylist()):
            if (keys is None or k in keys) and v is not None:
                out[k] = npy_decode(v)
    return out


def read_images(store: ArtifactStore, dataset: str, keys: set[str], shards: list[int],
                inputs: list[Manifest] | None) -> dict[str, np.ndarray]:
    """key -> ingested RGB image (H, W, 3) uint8 of ``keys`` in ``shards`` (``images``)."""
    out: dict[str, np.ndarray] = {}
    for s in shards:
        m = store.read_manifest(dataset, "images", s)
        if m is None:
            continue
        if inputs is not None:
            inputs.append(m)
        t = store.read_table(dataset, "images", s, columns=["sample_key", "image"])
        for k, v in zip(t.column("sample_key").to_pylist(), t.column("image").to_pylist()):
            if k in keys:
                out[k] = decode_image(v)
    return out
