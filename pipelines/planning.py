"""The orchestrator's cached check before dispatch, and the compact run record (no Prefect, no Ray).

Kept apart from the flow so that ``bench/bench_control_plane.py`` times exactly what a re-run does.
"""

from __future__ import annotations

from typing import Any

from fourm_core.config import DatasetConfig
from fourm_core.gcpause import gc_paused
from fourm_core.stage import StageSpec
from fourm_core.store import ArtifactStore
from fourm_core.units import UnitResult, sizes_intact


def split_cached(store: ArtifactStore, spec: StageSpec, config: DatasetConfig, shards: list[int],
                 force: bool) -> tuple[list[dict[str, Any]], list[int]]:
    """(summaries of the shards whose every unit is committed with its cache key, shards to dispatch).

    ``store`` should read through the index (``use_index=True``): then this costs one snapshot read per
    artifact, not one manifest read per unit, plus one listing per artifact for the data files' sizes.

    The listings run in the background while the shards' units and cache keys are built (the store serves
    listings, this process builds units: on S3 the two took about as long as each other, one after the
    other); the sizes are compared once both are done, so a truncated data file still sends its shard to run.
    """
    if force:
        return [], list(shards)
    cached: list[dict[str, Any]] = []
    bad: set[int] = set()
    artifacts = spec.dataset_artifacts(config)
    with gc_paused():  # ~10 objects per unit, all acyclic (fourm_core/gcpause.py)
        if store.use_index:  # started first: the index loads and the unit building overlap them
            store.preload_sizes(config.name, artifacts, wait=False)
        store.preload(config.name, artifacts)
        pending: list[tuple[int, list[UnitResult], list[dict[str, Any]]]] = []
        for shard in shards:
            results = spec.cached_results(store, config, shard, check_sizes=False)
            if results is None:
                bad.add(shard)
            else:
                pending.append((shard, results, [r.summary() for r in results]))
        listed: dict[str, dict[int, int]] = {}
        for shard, results, summaries in pending:  # the sizes: waits for each artifact's listing
            if sizes_intact(store, config.name, results, listed):
                cached.extend(summaries)
            else:
                bad.add(shard)
    return cached, [s for s in shards if s in bad]


def compact_units(summaries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, list[int | None]]]:
    """Run-record form: units that did something (done / failed) in full, cached ones as artifact -> shards
    (a re-run of 300 000 cached units would otherwise write and re-read ~100 MB of JSON)."""
    cached: dict[str, list[int | None]] = {}
    units = []
    for s in summaries:
        if s["status"] == "cached":
            for a in s["artifacts"]:
                cached.setdefault(a, []).append(s["shard"])
        else:
            units.append(s)
    return units, cached
