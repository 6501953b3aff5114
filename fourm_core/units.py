"""Cached, restartable units of work: (stage, artifact, shard).

A stage describes a unit with :class:`Unit` (its ingredients) and gives :func:`run_unit` a function that
computes the unit's output. ``run_unit`` skips the work when a committed manifest with the same cache
key exists, otherwise computes, commits the data, the per-sample errors table and the manifest (last),
and records unit-level failures so that ``status`` can show them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

import pyarrow as pa
from pydantic import BaseModel

from .config import ENCODE_SORTED, normalise
from .manifest import (ErrorSummary, Ingredients, InputRef, Manifest, ModelRef, Timings, flow_run_id, git_commit,
                       hostname, now)
from . import lease
from .index import PartEntry
from .store import ArtifactStore, table_schema, table_to_parquet_bytes, under_root

_enc = json.encoder.encode_basestring_ascii  # what json.dumps does for one str, without its overhead
_sha256 = hashlib.sha256


ERRORS_SCHEMA = pa.schema([("sample_key", pa.string()), ("reason", pa.string()), ("detail", pa.string())])


class UnitStatus(str, Enum):
    DONE = "done"  # computed and committed in this run
    CACHED = "cached"  # a committed manifest with the same cache key existed; nothing was done
    FAILED = "failed"  # the unit raised; a failure record was written


_STATUS_TEXT = {s: s.value for s in UnitStatus}


@dataclass(frozen=True)
class SampleError:
    """One sample that could not be processed. ``reason`` is a short stable code, ``detail`` free text."""

    sample_key: str
    reason: str
    detail: str = ""


@dataclass
class Unit:
    """The identity and ingredients of one unit of work.

    ``artifacts`` are the artifacts this unit commits (most units commit one; a labeler that produces
    several modalities commits one per modality, all under the same cache key).
    """

    stage: str
    dataset: str
    artifacts: list[str]
    shard: int | None
    code_version: str
    config: BaseModel | dict[str, Any] = field(default_factory=dict)
    inputs: list[InputRef] = field(default_factory=list)
    model: ModelRef | None = None

    def ingredients(self) -> Ingredients:
        return Ingredients(stage=self.stage, code_version=self.code_version, config=json.loads(normalise(self.config)),
                           inputs=self.inputs, model=self.model, git_commit=git_commit())

    @property
    def cache_key(self) -> str:
        """``self.ingredients().cache_key()``, without building the pydantic model (the orchestrator computes
        one per unit for every unit of a dataset; tests/core/test_cache_keys.py checks the two agree on the
        real stages' units and the control-plane bench's).

        The same JSON text, written directly: keys in sorted order (code_version, config, inputs, model, stage),
        the config as ``normalise`` writes it (json's C encoder), each string by ``encode_basestring_ascii`` (what
        ``json.dumps`` does with a str); a unit's single input (most units) without a sort or a generator."""
        inputs = self.inputs
        if len(inputs) == 1:
            i = inputs[0]
            refs = _enc(f"{i.dataset}/{i.artifact}/{i.shard}:{i.digest}")
        else:
            refs = ",".join(map(_enc, sorted([f"{i.dataset}/{i.artifact}/{i.shard}:{i.digest}" for i in inputs])))
        config = self.config
        if type(config) is dict and ENCODE_SORTED is not None:  # normalise's work without its call (most configs)
            try:
                config_json = "".join(ENCODE_SORTED(config, 0))
            except RecursionError:
                config_json = normalise(config)  # a circular reference: raises as ingredients() would
        else:
            config_json = normalise(config)
        model = self.model
        blob = (f'{{"code_version":{_enc(self.code_version)},"config":{config_json},'
                f'"inputs":[{refs}],"model":{"null" if model is None else _enc(model.digest)},'
                f'"stage":{_enc(self.stage)}}}')
        return _sha256(blob.encode()).hexdigest()[:32]

    @property
    def label(self) -> str:
        shard = "-" if self.shard is None else f"{self.shard:05d}"
        artifacts = self.artifacts
        return f"{self.dataset}/{artifacts[0] if len(artifacts) == 1 else '+'.join(artifacts)}/shard-{shard}"


@dataclass
class UnitOutput:
    """What a unit computed: one table per artifact (rows keyed by ``sample_key``), errors and stats."""

    tables: dict[str, pa.Table]
    errors: list[SampleError] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    extra_files: dict[str, dict[str, bytes]] = field(default_factory=dict)  # artifact -> suffix -> bytes
    # Wall seconds of the work behind this unit when it happened before ``compute`` was called (a stage that
    # computes several units in one pass, e.g. pseudolabel's shared pass): the manifest records this, not the
    # near-zero time of handing over precomputed tables.
    seconds: float | None = None


@dataclass
class UnitResult:
    unit: str
    stage: str
    artifacts: list[str]
    shard: int | None
    status: UnitStatus
    manifests: list[Manifest] | list[PartEntry] = field(default_factory=list)  # entries: from the index
    seconds: float = 0.0
    error: str | None = None
    # Index entries carry their part's URI relative to the store root (as the manifest records it); the store's
    # root URI, when ``manifests`` are such entries, so the summary names the same absolute URI as a fresh run.
    uri_base: str | None = None

    def summary(self) -> dict[str, Any]:
        """A small, serialisable record (what Prefect tasks return: URIs, digests, counts, never data)."""
        ms = self.manifests  # one summary per unit of the dataset on a cached re-run: kept lean
        seconds = self.seconds
        return {
            "unit": self.unit,
            "stage": self.stage,
            "artifacts": self.artifacts,
            "shard": self.shard,
            "status": _STATUS_TEXT[self.status],  # .value goes through enum's descriptor: 10x a dict lookup
            "seconds": seconds if seconds == 0 else round(seconds, 3),  # a cached unit's 0.0 without float rounding
            "rows": ms[0].rows if len(ms) == 1 else sum(m.rows for m in ms),
            "errors": _error_count(ms[0]) if ms else 0,
            "uris": [m.uri for m in ms] if self.uri_base is None else [under_root(self.uri_base, m.uri) for m in ms],
            "error": self.error,
        }


def _error_count(m: Manifest | PartEntry) -> int:
    return m.errors if isinstance(m, PartEntry) else m.errors.count


def is_cached(store: ArtifactStore, unit: Unit, key: str | None = None,
              check_sizes: bool = True) -> list[Manifest] | list[PartEntry] | None:
    """The committed manifests of ``unit`` if all exist with the unit's cache key, else None. A store reading
    through the index answers with its entries (cache key, rows, uri) without parsing any manifest.

    ``check_sizes=False`` (through the index only) leaves the comparison of sharded data files' sizes with the
    entries to the caller, :func:`sizes_intact` once the listings are in: the orchestrator builds every unit
    while the store lists the sizes (``ArtifactStore.preload_sizes(wait=False)``)."""
    key = key or unit.cache_key
    if store.use_index:
        entries = []
        for a in unit.artifacts:
            e = store.index(unit.dataset, a).get(unit.shard)
            if e is None or e.cache_key != key or not e.committed:
                return None
            # a truncated or missing data file is recomputed, not trusted
            if unit.shard is None:
                if not store.data_intact(store.read_manifest(unit.dataset, a, None)):  # type: ignore[arg-type]
                    return None
            elif check_sizes and not _size_matches(store, unit.dataset, a, e):
                return None
            entries.append(e)
        return entries
    found = []
    for artifact in unit.artifacts:
        try:
            m = store.read_manifest(unit.dataset, artifact, unit.shard)
        except ValueError:  # an unreadable manifest (ManifestError): recompute the unit, which rewrites it
            return None
        if m is None or m.cache_key != key or not store.data_intact(m):
            return None
        found.append(m)
    return found


def _size_matches(store: ArtifactStore, dataset: str, artifact: str, entry: PartEntry) -> bool:
    return entry.data_bytes is None or store.data_sizes(dataset, artifact).get(entry.part) == entry.data_bytes


def sizes_intact(store: ArtifactStore, dataset: str, results: list["UnitResult"],
                 listed: dict[str, dict[int, int]] | None = None) -> bool:
    """Whether every sharded data file of ``results`` (from ``is_cached(..., check_sizes=False)``) has the size
    its index entry records: the deferred half of the cached check. ``listed`` (artifact -> the store's
    ``data_sizes``), kept by a caller across calls, saves asking the store once per part."""
    listed = {} if listed is None else listed
    for r in results:
        if r.shard is None:
            continue
        for artifact, entry in zip(r.artifacts, r.manifests):
            if isinstance(entry, PartEntry) and entry.data_bytes is not None:
                sizes = listed.get(artifact)
                if sizes is None:
                    sizes = listed[artifact] = store.data_sizes(dataset, artifact)
                if sizes.get(entry.part) != entry.data_bytes:
                    return False
    return True


def errors_table(errors: list[SampleError]) -> pa.Table:
    return pa.Table.from_pylist([e.__dict__ for e in errors], schema=ERRORS_SCHEMA)


def errors_parquet(errors: list[SampleError]) -> bytes:
    """The errors table's Parquet bytes; those of no errors (most units) encoded once per process."""
    return table_to_parquet_bytes(errors_table(errors)) if errors else _no_errors_parquet()


@functools.cache
def _no_errors_parquet() -> bytes:
    # the same bytes every time (Parquet writes no timestamps); encoding them cost each commit 0.1-0.5 ms
    return table_to_parquet_bytes(errors_table([]))


_COLLECTING: ContextVar[list[Unit] | None] = ContextVar("fourm_collecting_units", default=None)


def cached_result(store: ArtifactStore, unit: Unit, key: str | None = None) -> UnitResult | None:
    """What :func:`run_unit` returns for ``unit`` when it is committed with its cache key (else None): lets a
    caller answer cached units before handing the others to workers."""
    t0 = time.perf_counter()
    cached = is_cached(store, unit, key)
    if cached is None:
        return None
    cached = [m.manifest() if isinstance(m, PartEntry) else m for m in cached]  # callers read stats
    return UnitResult(unit.label, unit.stage, unit.artifacts, unit.shard, UnitStatus.CACHED, cached, time.perf_counter() - t0)


@contextmanager
def collecting_units() -> Iterator[list[Unit]]:
    """Within the block, :func:`run_unit` records each unit it is given and computes and commits nothing.

    Lets the orchestrator learn a shard's units by calling the stage's own ``run_shard`` (one source of
    truth for which units a shard has), for stages that do no work outside their units' ``compute``.
    """
    units: list[Unit] = []
    token = _COLLECTING.set(units)
    try:
        yield units
    finally:
        _COLLECTING.reset(token)


def run_unit(store: ArtifactStore, unit: Unit, compute: Callable[[], UnitOutput], *, force: bool = False,
             raise_on_failure: bool = True) -> UnitResult:
    """Run one unit with caching and the commit protocol.

    Per-sample failures are part of ``compute``'s output and are committed as the errors table; an
    exception from ``compute`` is a unit failure: it is recorded beside the artifact and re-raised (so an
    orchestrator can retry) unless ``raise_on_failure`` is False.
    """
    if (collected := _COLLECTING.get()) is not None:
        collected.append(unit)
        return UnitResult(unit.label, unit.stage, unit.artifacts, unit.shard, UnitStatus.CACHED, [])
    ingredients = unit.ingredients()
    key = ingredients.cache_key()
    t0 = time.perf_counter()
    if not force and (cached := cached_result(store, unit, key)) is not None:
        return cached
    started = now()
    try:
        with lease.held(store, unit.dataset, unit.artifacts, unit.shard,
                        {"unit": unit.label, "stage": unit.stage, "host": hostname(), "flow_run_id": flow_run_id()}):
            output = compute()
        missing = set(unit.artifacts) - set(output.tables)
        if missing:
            raise RuntimeError(f"unit {unit.label} produced no table for {sorted(missing)}")
        reasons = Counter(e.reason for e in output.errors)
        summary = ErrorSummary(count=len(output.errors), by_reason=dict(reasons))
        manifests = []
        for i, artifact in enumerate(unit.artifacts):
            table = output.tables[artifact]
            files = {".parquet": table_to_parquet_bytes(table)}
            if i == 0:  # the errors table lives with the unit's first artifact
                files[".errors.parquet"] = errors_parquet(output.errors)
            files.update(output.extra_files.get(artifact, {}))
            finished = now()
            fields = dict(
                dataset=unit.dataset, artifact=artifact, shard=unit.shard, rows=table.num_rows,
                schema=table_schema(table), cache_key=key, ingredients=ingredients,
                errors=summary if i == 0 else ErrorSummary(), stats=output.stats,
                timings=Timings(started=started, finished=finished,
                                seconds=(finished - started).total_seconds() + (output.seconds or 0.0)),
                host=hostname(), flow_run_id=flow_run_id(),
            )
            manifests.append(store.commit(fields, files, ".parquet"))
        return UnitResult(unit.label, unit.stage, unit.artifacts, unit.shard, UnitStatus.DONE, manifests,
                          time.perf_counter() - t0 + (output.seconds or 0.0))
    except Exception as exc:  # unit-level failure: record it where `status` will find it
        info = {"unit": unit.label, "stage": unit.stage, "cache_key": key, "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(), "time": now().isoformat(), "host": hostname(),
                "flow_run_id": flow_run_id()}
        for artifact in unit.artifacts:
            try:
                store.record_failure(unit.dataset, artifact, unit.shard, info)
            except Exception:  # the store itself may be what failed; the original error matters more
                pass
        if raise_on_failure:
            raise
        return UnitResult(unit.label, unit.stage, unit.artifacts, unit.shard, UnitStatus.FAILED, [], time.perf_counter() - t0, info["error"])
