"""Reading pseudo-label arrays from the store, and committing synthetic ones with manifests.

Label shards are Parquet with ``sample_key`` and one binary column holding one ``.npy`` array per
sample (layouts in ``normalize``). The column defaults to the label's name (``labels/depth`` ->
``depth``); ``.npy`` bytes are read with ``allow_pickle=False``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from fourm_core.label_codec import decode_label, encode_label, npy_decode
from fourm_core.manifest import Manifest
from fourm_core.modalities import label_artifact
from fourm_core.store import ArtifactStore
from fourm_core.units import Unit, UnitOutput, run_unit

from .registry import tokenizer_config, tokenizer_specs
from .synthetic import synthetic_arrays

SYNTHETIC_CODE_VERSION = "labelfmt-tokenize.synthetic_labels/1"


def read_label_arrays(store: ArtifactStore, dataset: str, label: str, column: str | None = None,
                      shards: list[int] | None = None) -> tuple[list[str], list[np.ndarray], list[Manifest]]:
    """(sample_keys, arrays, manifests) of every committed shard of ``labels/<label>`` (or ``shards``).

    Cells are decoded by :func:`fourm_core.label_codec.decode_label` (the labelers' storage format);
    ``column`` names a single ``.npy`` column instead. The structured SAM and pose labels yield one array
    per instance (keys ``<sample_key>#<i>``): 64x64 in-box masks and 207-d body poses (``seq_geometry``).
    """
    artifact = label_artifact(label)
    keys: list[str] = []
    arrays: list[np.ndarray] = []
    manifests: list[Manifest] = []
    for shard in shards if shards is not None else store.committed_shards(dataset, artifact):
        manifest = store.read_manifest(dataset, artifact, shard)
        rows = None if column else _instance_rows(store, dataset, label, shard)
        for key, arr in rows if rows is not None else iter_label_rows(store, dataset, label, shard, column):
            if arr is None:  # a sample the labeler failed on: nothing to learn from
                continue
            keys.append(key)
            arrays.append(arr)
        manifests.append(manifest)
    return keys, arrays, manifests


# Labels stored per image with several instances each (the labelers' structured columns): the tokenizer
# trains on the instances. label -> (column that marks the structured layout, row -> training arrays).
def _instance_readers() -> dict:
    from .seq_geometry import pose_training_vectors, sam_training_masks

    return {"sam_instance": ("instances", sam_training_masks), "human_poses": ("body_pose", pose_training_vectors)}


def _instance_rows(store: ArtifactStore, dataset: str, label: str,
                   shard: int) -> list[tuple[str, np.ndarray]] | None:
    """``(f"{sample_key}#{i}", array)`` per instance of a structured label shard (SAM instances -> 64x64
    in-box masks, persons -> 207-d body poses); None for labels stored one array per sample."""
    readers = _instance_readers()
    if label not in readers:
        return None
    marker, expand = readers[label]
    table = store.read_table(dataset, label_artifact(label), shard)
    if marker not in table.column_names:  # synthetic/development labels: one .npy array per sample
        return None
    return [(f"{row['sample_key']}#{i}", a) for row in table.to_pylist() for i, a in enumerate(expand(row))]


def iter_label_rows(store: ArtifactStore, dataset: str, label: str, shard: int,
                    column: str | None = None) -> Iterator[tuple[str, np.ndarray | None]]:
    """(sample_key, decoded array or None) for every row of one committed label shard."""
    # The codec's columns plus any optional ones it understands (e.g. `grid`): read the whole label shard.
    table = store.read_table(dataset, label_artifact(label), shard, columns=["sample_key", column] if column else None)
    for row in table.to_pylist():
        if column:
            yield row["sample_key"], None if row[column] is None else npy_decode(row[column])
        else:
            yield row["sample_key"], decode_label(label, row)


def commit_synthetic_labels(store: ArtifactStore, dataset: str, tokenizer: str, profile: str = "tiny",
                            n_samples: int = 256, shard_size: int = 128, seed: int = 0) -> list[Manifest]:
    """Commit synthetic label shards for ``tokenizer`` as ``labels/<label>`` (through run_unit, so they
    have manifests and are cached). Stands in for the pseudo labelers during development and in CI."""
    spec = tokenizer_specs()[tokenizer]
    config = tokenizer_config(tokenizer, profile)
    label = spec.labels[0]
    manifests = []
    for shard in range((n_samples + shard_size - 1) // shard_size):
        n = min(shard_size, n_samples - shard * shard_size)
        unit = Unit(stage="synthetic_labels", dataset=dataset, artifacts=[label_artifact(label)], shard=shard,
                    code_version=SYNTHETIC_CODE_VERSION,
                    config={"tokenizer": tokenizer, "profile": profile, "n": n, "seed": seed})

        def compute(shard: int = shard, n: int = n) -> UnitOutput:
            arrays = synthetic_arrays(config, n, seed=seed * 100_003 + shard)
            # Stored exactly as the labelers store them, so training reads synthetic and real labels alike.
            table = pa.Table.from_pylist([{"sample_key": f"synthetic-{shard:05d}-{i:05d}", **encode_label(label, a)}
                                          for i, a in enumerate(arrays)])
            return UnitOutput({label_artifact(label): table}, stats={"synthetic": True})

        manifests.extend(run_unit(store, unit, compute).manifests)
    return manifests
