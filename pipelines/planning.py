"""The orchestrator's cached check before dispatch, and the compact run record (no Prefect, no Ray).

Kept apart from the flow so that ``bench/bench_control_plane.py`` times exactly what a re-run does.
"""

from __future__ import annotations

from typing import Any

from fourm_core.config import DatasetConfig
from fourm_core.gcpause import gc_paused
from fourm_core.stage import StageSpec
from fourm_core.store import ArtifactStore


def split_cached(store: ArtifactStore, spec: StageSpec, config: DatasetConfig, shards: list[int],
                 force: bool) -> tuple[list[dict[str, Any]], list[int]]:
    """(summaries of the shards whose every unit is committed with its cache key, shards to dispatch).

    ``store`` should read through the index (``use_index=True``): then this costs one snapshot read per
    artifact, not one manifest read per unit.
    """
    if force:
        return [], list(shards)
    cached: list[dict[str, Any]] = []
    to_run: list[int] = []
    with gc_paused():  # ~10 objects per unit, all acyclic (fourm_core/gcpause.py)
        store.preload(config.name, spec.dataset_artifacts(config))
        store.preload_sizes(config.name, spec.dataset_artifacts(config))  # the size check's listings, in parallel
        for shard in shards:
            results = spec.cached_results(store, config, shard)
            if results is None:
                to_run.append(shard)
            else:
                cached.extend(r.summary() for r in results)
    return cached, to_run


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
