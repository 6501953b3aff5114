"""Synthetic token shards in the documented format (docs/data-format.md), committed with manifests.

Tests and benchmarks train against these (the real demo shards come from the tokenize stage). The task is
learnable: every sample has a hidden class; its image-token grids, global tokens and caption are
functions of the class (plus a little noise), so any modality predicts the others.

Each sample has ``n_crops`` crops; crop c shifts the image grids by c columns so that using one crop
consistently across modalities matters.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from fourm_core.modalities import ModalityKind, get_modality
from fourm_core.store import ArtifactStore
from fourm_core.units import Unit, UnitOutput, run_unit

STAGE = "tokenize-synthetic"
CODE_VERSION = "1"
CROPS_ARTIFACT = "tokens/_crops"


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
                      force: bool = False) -> dict[str, list]:
    """Commit ``tokens/<modality>`` and ``tokens/_crops`` shards of a synthetic dataset; return manifests.

    ``dataset`` may not be ``demo``: that name holds the real demo token shards the build-dataset flow makes."""
    if dataset == "demo":
        raise ValueError("synthetic token shards may not be written into dataset 'demo' (the real demo's); "
                         "use another name, e.g. 'synthetic'")
    out: dict[str, list] = {}
    config = dict(modalities=modalities, shard_size=shard_size, n_crops=n_crops, n_classes=n_classes, seed=seed)
    artifacts = [get_modality(m).token_artifact for m in modalities] + [CROPS_ARTIFACT]
    for shard in range(n_shards):
        def compute(shard: int = shard) -> UnitOutput:
            rng = np.random.default_rng([seed, shard])
            keys = [f"{dataset}-{shard:05d}-{i:05d}" for i in range(shard_size)]
            classes = rng.integers(0, n_classes, shard_size)
            tables = {}
            for m in modalities:
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
                     "box": [[0.0, 0.0, 1.0, 1.0]] * (shard_size * n_crops),
                     "flip": [False] * (shard_size * n_crops)}
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
