"""The ``dedup`` stage: duplicates across shards and datasets, exact and (optionally) perceptual.

Ingestion removes exact duplicates within a shard; a shard cannot see the others without making shards
depend on each other. This separate, cached stage does the rest and **drops nothing**: per shard it
commits ``dedup/shard-N.parquet``, one row per sample it judges a duplicate (kind ``exact`` or ``near``,
the earlier sample it repeats, the pHash distance), for readers to filter on.

"Earlier" is a fixed order: every committed part of the datasets in ``dedup.against`` (e.g. CC12M when
ingesting COYO), then this dataset's shards 0..N-1, then earlier samples of shard N. So the first
occurrence is kept and the result does not depend on which shard ran first; shard N needs this dataset's
shards 0..N ingested (it fails, naming the missing ones, before they are).

What it reads is only the small per-part digest file each ingest unit commits beside its data
(``shard-N.digests.parquet``: sample_key, sha256 of the stored pixels or text, 64-bit pHash), through the
narrow :class:`DigestSource` interface: which parts are committed (manifests) and one part's digest table.
Nothing re-reads image shards. ``StoreDigests`` answers from the store's index of committed units
(fourm_core.index: a compacted snapshot plus the parts committed since), so planning cost does not grow with
re-reading manifests. The unit's cache key holds a fingerprint of every digest file it
consulted, so a re-ingested earlier shard (or a grown ``against`` dataset) re-runs it.
"""

from __future__ import annotations

import hashlib
import io
import time
import threading
from functools import lru_cache
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from fourm_core.config import ConfigError, DatasetConfig, StrictModel
from fourm_core.index import load_index
from fourm_core.manifest import Manifest
from fourm_core.stage import StageSpec
from fourm_core.store import ArtifactStore
from fourm_core.units import Unit, UnitOutput, UnitResult, run_unit

from .builder import DIGESTS_SUFFIX
from .stage import artifacts_for, plan_shards, record_early_failure

CODE_VERSION = "dedup/1"
STAGE_NAME = "dedup"

DEDUP_SCHEMA = pa.schema([
    ("sample_key", pa.string()), ("kind", pa.string()), ("duplicate_of", pa.string()),
    ("duplicate_of_dataset", pa.string()), ("duplicate_of_shard", pa.int32()), ("distance", pa.int8()),
])


class DedupConfig(StrictModel):
    """The ``dedup:`` section of a dataset config."""

    against: list[str] = Field(default_factory=list, description="other datasets (same store) that come first")
    near_max_distance: int | None = Field(None, ge=0, le=16, description=(
        "pHash Hamming distance at or below which two images are near duplicates; None: exact only"))


def dedup_config(config: DatasetConfig) -> DedupConfig:
    try:
        return DedupConfig.model_validate(config.dedup)
    except Exception as exc:
        raise ConfigError(f"dataset '{config.name}': bad 'dedup' section: {exc}") from None


# ------------------------------------------------------------------------------------ digest source


class DigestSource(Protocol):
    """What de-duplication needs from the store: kept narrow so an index of committed units can serve it."""

    def parts(self, dataset: str, artifact: str) -> dict[int, Manifest]:
        """The committed parts of an artifact: shard -> manifest."""

    def digests(self, manifest: Manifest) -> pa.Table:
        """The digest table (sample_key, digest, phash) committed with one part."""


class StoreDigests:
    """A :class:`DigestSource` over the store's index of committed units (fourm_core.index) and the digest files."""

    def __init__(self, store: ArtifactStore):
        self.store = store

    def parts(self, dataset: str, artifact: str) -> dict[int, Manifest]:
        # a fresh load each time: shards commit while a dedup run goes on (snapshot + newer journal marks)
        index = load_index(self.store, dataset, artifact)
        return {shard: index.get(shard).manifest() for shard in index.committed()}

    def digests(self, manifest: Manifest) -> pa.Table:
        entry = next((f for f in manifest.files if f.name.endswith(DIGESTS_SUFFIX)), None)
        if entry is None:
            raise RuntimeError(f"{manifest.uri} has no digest file: it was ingested before ingest/3; re-run ingest "
                               f"on dataset '{manifest.dataset}' shard {manifest.shard} (python -m ingest_stage "
                               f"--dataset {manifest.dataset} --shard {manifest.shard})")
        return _digest_table(self.store, manifest.dataset, manifest.artifact, manifest.shard, entry.digest, manifest.uri)


@lru_cache(maxsize=1024)  # ~100 KB per 1000-sample part: at most ~100 MB held
def _digest_table(store: ArtifactStore, dataset: str, artifact: str, shard: int | None, digest: str,
                  uri: str) -> pa.Table:
    path = store.part_path(dataset, artifact, shard, DIGESTS_SUFFIX, uri=uri)  # in the layout the manifest records
    data = store.read_bytes(path)
    if hashlib.sha256(data).hexdigest() != digest:
        raise RuntimeError(f"{store.uri(path)} does not match "
                           f"the digest in its manifest; re-run ingest for that shard")
    return pq.read_table(io.BytesIO(data))


# ------------------------------------------------------------------------------------ the decision


def hamming(a: np.ndarray, b: int) -> np.ndarray:
    """Bit distance between each uint64 of ``a`` and ``b``."""
    return np.bitwise_count(a ^ np.uint64(b))


def _chunks(d: int) -> list[tuple[int, int]]:
    """d + 1 disjoint bit ranges covering 64 bits: two hashes within distance d agree exactly on one of them
    (pigeonhole), so candidates are found by exact lookups per range (multi-index hashing)."""
    edges = np.linspace(0, 64, d + 2).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _chunk(values: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return (values >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)


class EarlierIndex:
    """Everything that comes before a shard: first position of each digest, and (for near duplicates) the
    pHashes sorted per bit range. Built part by part and kept per process, so the shards of one run extend
    it by one part each instead of rebuilding it from every earlier part."""

    def __init__(self, near_max_distance: int | None):
        self.near = near_max_distance
        self.parts: list[str] = []  # "dataset/artifact/shard:digest-file sha" of each part, in order
        self.keys: list[str] = []
        self.datasets: list[str] = []
        self.shards: list[int] = []
        self.first: dict[str, int] = {}
        self.phashes = np.zeros(0, np.uint64)
        self.ranges = [(lo, hi, np.zeros(0, np.uint64), np.zeros(0, np.int64)) for lo, hi in
                       (_chunks(near_max_distance) if near_max_distance is not None else [])]

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, part: str, dataset: str, shard: int, table: pa.Table) -> None:
        """Append one part's digest table (rows after everything already in)."""
        start = len(self.keys)
        keys = table.column("sample_key").to_pylist()
        for i, d in enumerate(table.column("digest").to_pylist()):
            self.first.setdefault(d, start + i)
        self.parts.append(part)
        self.keys += keys
        self.datasets += [dataset] * len(keys)
        self.shards += [shard] * len(keys)
        if self.near is None:
            return
        ph = table.column("phash")
        has = ~np.asarray(ph.is_null().to_numpy(zero_copy_only=False))
        new = np.asarray(ph.fill_null(0).to_numpy(zero_copy_only=False)).astype(np.int64).view(np.uint64)
        self.phashes = np.concatenate([self.phashes, new])
        pos = np.arange(start, start + len(keys))[has]  # texts have no pHash: never near anything
        for j, (lo, hi, vals, order) in enumerate(self.ranges):
            v = _chunk(new[has], lo, hi)
            o = np.argsort(v)
            at = np.searchsorted(vals, v[o])  # merge: O(size) per part, not a re-sort of everything
            self.ranges[j] = (lo, hi, np.insert(vals, at, v[o]), np.insert(order, at, pos[o]))

    def where(self, pos: int) -> tuple[str, str, int]:
        return self.keys[pos], self.datasets[pos], self.shards[pos]

    def nearest(self, phashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each query hash: (closest indexed position within the bound, or -1; its distance)."""
        best = np.full(len(phashes), -1, np.int64)
        dist = np.full(len(phashes), 65, np.int64)
        if self.near is None or not len(self.keys):
            return best, dist
        bounds = [(order, np.searchsorted(vals, _chunk(phashes, lo, hi), "left"),
                   np.searchsorted(vals, _chunk(phashes, lo, hi), "right")) for lo, hi, vals, order in self.ranges]
        for i in range(len(phashes)):
            c = np.concatenate([order[a[i]:b[i]] for order, a, b in bounds])
            if len(c):
                d = hamming(self.phashes[c], int(phashes[i]))
                m = d.min()
                if m <= self.near:
                    best[i], dist[i] = c[d == m].min(), m  # the first of the closest
        return best, dist


_INDEXES: dict[tuple, EarlierIndex] = {}
# Held while an index is extended and used: shards decided in parallel threads must not see each other's parts.
_LOCK = threading.Lock()


def earlier_index(source: DigestSource, parts: list[tuple[str, Manifest]], near: int | None,
                  cache_key: tuple) -> EarlierIndex:
    """The index of ``parts`` (in order), extending this process's cached one when it holds a prefix of them."""
    names = [_part_name(ds, m) for ds, m in parts]
    index = _INDEXES.get(cache_key)
    if index is None or index.near != near or index.parts != names[:len(index.parts)]:
        index = EarlierIndex(near)
    for (ds, m), name in list(zip(parts, names))[len(index.parts):]:
        index.add(name, ds, m.shard if m.shard is not None else -1, source.digests(m))
    _INDEXES.clear()  # one index per process: the last dataset's (its next shard extends it)
    _INDEXES[cache_key] = index
    return index


def _part_name(dataset: str, m: Manifest) -> str:
    entry = next((f.digest for f in m.files if f.name.endswith(DIGESTS_SUFFIX)), m.digest)
    return f"{dataset}/{m.artifact}/{m.shard}:{entry}"


def decide(shard_keys: list[str], shard_digests: list[str], shard_phashes: np.ndarray | None, earlier: EarlierIndex,
           dataset: str, shard: int) -> list[dict[str, Any]]:
    """One row per duplicate sample of the shard (see module doc); samples in order, first occurrence kept.
    ``earlier`` is not changed: the shard's own samples are checked against each other here."""
    rows: list[dict[str, Any]] = []
    local: dict[str, int] = {}
    near = earlier.near is not None and shard_phashes is not None and len(shard_phashes) > 0
    if near:
        best, dist = earlier.nearest(shard_phashes)

    def row(key: str, kind: str, of: tuple[str, str, int], distance: int) -> dict[str, Any]:
        return {"sample_key": key, "kind": kind, "duplicate_of": of[0], "duplicate_of_dataset": of[1],
                "duplicate_of_shard": of[2], "distance": distance}

    kept = np.zeros(len(shard_keys), bool)  # the shard's samples that are not exact duplicates (near candidates)
    for i, (key, digest) in enumerate(zip(shard_keys, shard_digests)):
        hit = earlier.first.get(digest)
        if hit is not None:
            rows.append(row(key, "exact", earlier.where(hit), 0))
            continue
        if digest in local:
            rows.append(row(key, "exact", (shard_keys[local[digest]], dataset, shard), 0))
            continue
        local[digest] = i
        if near:
            d_in = np.where(kept[:i], hamming(shard_phashes[:i], int(shard_phashes[i])), 65)
            j = int(np.argmin(d_in)) if i else -1  # the first of the closest
            if best[i] >= 0 and (j < 0 or dist[i] <= d_in[j]):  # earlier parts come first on a tie
                rows.append(row(key, "near", earlier.where(int(best[i])), int(dist[i])))
            elif j >= 0 and d_in[j] <= earlier.near:
                rows.append(row(key, "near", (shard_keys[j], dataset, shard), int(d_in[j])))
            kept[i] = True
    return rows


# ------------------------------------------------------------------------------------ units


def _earlier_parts(source: DigestSource, store: ArtifactStore, config: DatasetConfig, shard: int,
                   cfg: DedupConfig) -> tuple[list[tuple[str, Manifest]], Manifest]:
    """(every part that comes before ``shard``, in order; the shard's own ingest part)."""
    artifact = artifacts_for(config)[0]
    out: list[tuple[str, Manifest]] = []
    for other in cfg.against:  # image datasets against images, text datasets against texts
        if other == config.name:
            raise ConfigError(f"dataset '{config.name}': dedup.against lists the dataset itself")
        parts = source.parts(other, artifact)
        if not parts:
            raise RuntimeError(f"dedup.against names dataset '{other}', which has no committed '{artifact}' parts in "
                               f"{store.root_uri}; ingest it first or remove it from dedup.against")
        out += [(other, parts[s]) for s in sorted(parts)]
    mine = source.parts(config.name, artifact)
    missing = [s for s in range(shard + 1) if s not in mine]
    if missing:
        raise RuntimeError(f"dedup of {config.name} shard {shard} needs its ingest shards 0..{shard}; not committed: "
                           f"{_ranges(missing)} (run ingest for them first)")
    out += [(config.name, mine[s]) for s in range(shard)]
    return out, mine[shard]


def _ranges(xs: list[int]) -> str:
    return ", ".join(str(x) for x in xs[:20]) + (f" ... ({len(xs)} in all)" if len(xs) > 20 else "")


def make_unit(source: DigestSource, store: ArtifactStore, config: DatasetConfig, shard: int) -> tuple[Unit, Any]:
    cfg = dedup_config(config)
    earlier, own = _earlier_parts(source, store, config, shard, cfg)
    fp = hashlib.sha256()
    for ds, m in earlier:
        fp.update(f"{_part_name(ds, m)}\n".encode())
    unit = Unit(stage=STAGE_NAME, dataset=config.name, artifacts=["dedup"], shard=shard, code_version=CODE_VERSION,
                config={"dedup": cfg.model_dump(mode="json"), "earlier_parts": len(earlier),
                        "earlier_fingerprint": fp.hexdigest()},
                inputs=[own.as_input()])
    return unit, (earlier, own, cfg)


def run_shard(store: ArtifactStore, config: DatasetConfig, shard: int, *, force: bool = False,
              source: DigestSource | None = None) -> list[UnitResult]:
    """De-duplicate one shard against everything before it (cached; see the module doc)."""
    source = source or StoreDigests(store)
    try:
        unit, (earlier_parts, own, cfg) = make_unit(source, store, config, shard)
    except Exception as exc:
        record_early_failure(store, STAGE_NAME, config.name, ["dedup"], shard, exc, "while finding the earlier parts")
        raise

    def compute() -> UnitOutput:
        t0 = time.perf_counter()
        mine = source.digests(own)
        ph = mine.column("phash")
        phashes = None if ph.null_count == len(ph) else np.asarray(
            ph.fill_null(0).to_numpy(zero_copy_only=False)).astype(np.int64).view(np.uint64)
        with _LOCK:
            earlier = earlier_index(source, earlier_parts, cfg.near_max_distance, (store.root_uri, config.name))
            rows = decide(mine.column("sample_key").to_pylist(), mine.column("digest").to_pylist(), phashes,
                          earlier, config.name, shard)
            n_earlier = len(earlier)
        kinds = {k: sum(r["kind"] == k for r in rows) for k in ("exact", "near")}
        stats = {"samples": mine.num_rows, "earlier_samples": n_earlier, "earlier_parts": len(earlier_parts),
                 **kinds, "work_seconds": round(time.perf_counter() - t0, 3)}
        return UnitOutput({"dedup": pa.Table.from_pylist(rows, schema=DEDUP_SCHEMA)}, [], stats)

    return [run_unit(store, unit, compute, force=force)]


def shard_units(store: ArtifactStore, config: DatasetConfig, shard: int) -> list[Unit]:
    return [make_unit(StoreDigests(store), store, config, shard)[0]]


STAGE = StageSpec(name=STAGE_NAME, plan_shards=plan_shards, run_shard=run_shard, artifacts=("dedup",), heavy=False,
                  num_cpus=1.0, shard_units=shard_units,
                  # shard N reads the digests of this dataset's shards 0..N (pipelines/dag.py)
                  after=("ingest",), reads_shards=lambda config, shard: list(range(shard + 1)))
