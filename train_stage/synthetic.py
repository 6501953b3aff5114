"""Synthetic token shards in the documented format (docs/data-format.md), committed with manifests.

Tests and benchmarks train against these (the real demo shards come from the tokenize stage). The task is
learnable: every sample has a hidden class; its image-token grids, global tokens and caption are
functions of the class (plus a little noise), so any modality predicts the others.

Each sample has ``n_crops`` crops; crop c shifts the image grids by c columns so that using one crop
consistently across modalities matters, and ``tokens/_crops`` gives each crop its own box (and every odd
crop a flip). The raw inputs, when asked for: ``rgb@224`` writes an ``images`` shard (small PNGs whose
colour follows the class), ``t5_caption`` a ``labels/t5_caption`` shard (4096-d float16 rows).

``realistic=True`` makes shards with the costs of production ones instead (for benchmarks; the task is not
learnable): image and global tokens uniform over the modality's vocabulary (VQ codes barely compress, so
Parquet decodes every byte), sequences of 1/8 to all of their ``max_tokens`` ids, crops drawn like the tokenize
stage's (``CropConfig`` defaults: 80-100 % of the area), 256-px-shorter-side JPEGs (the ingest default, quality
95) and 8-40 T5 rows per caption.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from fourm_core.modalities import ModalityKind, get_modality
from fourm_core.store import ArtifactStore
from fourm_core.units import Unit, UnitOutput, run_unit

from .synthetic_realistic import realistic_tables

STAGE = "tokenize-synthetic"
CODE_VERSION = "2"
CROPS_ARTIFACT = "tokens/_crops"


def synthetic_crop_box(crop: int) -> tuple[list[float], bool]:
    """Box (x0, y0, x1, y1) and flip of crop ``crop``: crop 0 is the whole image, later ones smaller."""
    return [0.1 * min(crop, 3), 0.0, 1.0, 1.0 - 0.1 * min(crop, 3)], crop % 2 == 1


def _raw_inputs(modalities: list[str], keys: list[str], classes: np.ndarray, rng: np.random.Generator,
                n_classes: int) -> dict[str, pa.Table]:
    """The ``images`` / ``labels/t5_caption`` tables of a synthetic shard (only the columns training reads)."""
    from fourm_core.label_codec import f16_encode, png_encode

    tables = {}
    if "rgb@224" in modalities:
        imgs = []
        for cls in classes:
            base = np.array([(37 * cls) % 256, (91 * cls) % 256, (151 * cls) % 256], np.uint8)
            noise = rng.integers(0, 24, (40, 56, 3), dtype=np.uint8)
            imgs.append(png_encode(base[None, None] + noise))
        tables[get_modality("rgb@224").label_artifact] = pa.table({
            "sample_key": pa.array(keys, pa.string()), "image": pa.array(imgs, pa.binary()),
            "width": pa.array([56] * len(keys), pa.int32()), "height": pa.array([40] * len(keys), pa.int32())})
    if "t5_caption" in modalities:
        dim = get_modality("t5_caption").feature_dim
        centres = np.random.default_rng(7).standard_normal((n_classes, dim)).astype(np.float32)
        rows, lengths = [], []
        for cls in classes:
            n = int(rng.integers(3, 11))
            rows.append(f16_encode(centres[cls][None] + 0.1 * rng.standard_normal((n, dim)).astype(np.float32)))
            lengths.append(n)
        tables[get_modality("t5_caption").label_artifact] = pa.table({
            "sample_key": pa.array(keys, pa.string()), "embedding": pa.array(rows, pa.binary()),
            "n_tokens": pa.array(lengths, pa.int16()), "dim": pa.array([dim] * len(keys), pa.int16())})
    return tables


def _sample_tokens(mod_name: str, cls: int, crop: int, rng: np.random.Generator, n_classes: int) -> list[int]:
    mod = get_modality(mod_name)
    if mod.kind == ModalityKind.SEQUENCE:
        n = int(rng.integers(4, min(mod.max_tokens, 24) + 1))
        # value tokens (204...) that depend on the class: a short repeated phrase
        base = 204 + 37 * cls
        return [base + (j % 5) for j in range(n)]
    L = mod.max_tokens
    if mod.grid is not None:
        h, w = mod.grid
        yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        grid = (cls * 7 + (xx + crop) // 4 + yy // 4) % min(mod.vocab_size, 64)
        noise = rng.random(L) < 0.05
        flat = grid.reshape(-1)
        flat[noise] = rng.integers(0, min(mod.vocab_size, 64), int(noise.sum()))
        return flat.tolist()
    return [(cls * 3 + j) % mod.vocab_size for j in range(L)]


def make_token_shards(store: ArtifactStore, dataset: str, modalities: list[str], n_shards: int = 2,
                      shard_size: int = 32, n_crops: int = 2, n_classes: int = 8, seed: int = 0,
                      force: bool = False, realistic: bool = False) -> dict[str, list]:
    """Commit ``tokens/<modality>`` and ``tokens/_crops`` shards of a synthetic dataset; return manifests.

    ``realistic``: production-like content and sizes instead of a learnable task (``synthetic_realistic``).

    ``dataset`` may not be ``demo``: that name holds the real demo token shards the build-dataset flow makes."""
    if dataset == "demo":
        raise ValueError("synthetic token shards may not be written into dataset 'demo' (the real demo's); "
                         "use another name, e.g. 'synthetic'")
    out: dict[str, list] = {}
    config = dict(modalities=modalities, shard_size=shard_size, n_crops=n_crops, n_classes=n_classes, seed=seed)
    if realistic:  # only then, so the cache keys of existing learnable stores stay as they were
        config["realistic"] = True
    raw_kinds = (ModalityKind.PIXELS, ModalityKind.EMBEDDING_SEQ)
    token_mods = [m for m in modalities if get_modality(m).kind not in raw_kinds]
    artifacts = [get_modality(m).token_artifact for m in token_mods] + [CROPS_ARTIFACT] + \
        [get_modality(m).label_artifact for m in modalities if get_modality(m).kind in raw_kinds]
    for shard in range(n_shards):
        def compute(shard: int = shard) -> UnitOutput:
            rng = np.random.default_rng([seed, shard])
            keys = [f"{dataset}-{shard:05d}-{i:05d}" for i in range(shard_size)]
            if realistic:
                return UnitOutput(tables=realistic_tables(modalities, keys, n_crops, rng))
            classes = rng.integers(0, n_classes, shard_size)
            tables = _raw_inputs(modalities, keys, classes, rng, n_classes)
            for m in token_mods:
                mod = get_modality(m)
                rows = {"sample_key": [], "crop": [], "tokens": []}
                for key, cls in zip(keys, classes):
                    for c in range(n_crops):
                        rows["sample_key"].append(key)
                        rows["crop"].append(c)
                        rows["tokens"].append(_sample_tokens(m, int(cls), c, rng, n_classes))
                cols = {"sample_key": pa.array(rows["sample_key"], pa.string()),
                        "crop": pa.array(rows["crop"], pa.int16()),
                        "tokens": pa.array(rows["tokens"], pa.list_(pa.int16()))}
                if mod.kind == ModalityKind.SEQUENCE:  # sequences also keep their source forms
                    cols["text"] = pa.array([" ".join(map(str, t)) for t in rows["tokens"]], pa.string())
                    cols["structured"] = pa.array([json.dumps({"class": int(c)}) for c in
                                                   np.repeat(classes, n_crops)], pa.string())
                tables[mod.token_artifact] = pa.table(cols)
            crops = {"sample_key": [k for k in keys for _ in range(n_crops)],
                     "crop": [c for _ in keys for c in range(n_crops)],
                     "box": [synthetic_crop_box(c)[0] for _ in keys for c in range(n_crops)],
                     "flip": [synthetic_crop_box(c)[1] for _ in keys for c in range(n_crops)]}
            tables[CROPS_ARTIFACT] = pa.table({"sample_key": pa.array(crops["sample_key"], pa.string()),
                                               "crop": pa.array(crops["crop"], pa.int16()),
                                               "box": pa.array(crops["box"], pa.list_(pa.float32(), 4)),
                                               "flip": pa.array(crops["flip"], pa.bool_())})
            return UnitOutput(tables=tables, stats={"classes": n_classes})

        unit = Unit(stage=STAGE, dataset=dataset, artifacts=artifacts, shard=shard, code_version=CODE_VERSION,
                    config=config)
        res = run_unit(store, unit, compute, force=force)
        for m in res.manifests:
            out.setdefault(m.artifact, []).append(m)
    return out
