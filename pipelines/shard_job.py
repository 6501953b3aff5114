"""One shard of one stage: the unit of work Ray workers (or the Prefect task thread) execute.

Kept free of Prefect imports on purpose: Ray workers import this module, and importing Prefect costs
1-4 s per worker. Everything crossing the process boundary is small and plain (config as a dict,
store root and options, the stage's "module:attr" target), and only unit summaries come back.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from fourm_core.config import DatasetConfig, validate_config
from fourm_core.stage import StageSpec
from fourm_core.store import ArtifactStore

FLOW_RUN_ENV = "FOURM_FLOW_RUN_ID"  # read by fourm_core.manifest.flow_run_id()


def load_spec(target: str) -> StageSpec:
    """Import ``module:attr`` and return the StageSpec it names (workers do not consult the registry)."""
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def run_shard_job(target: str, config: dict[str, Any], store_root: str, storage_options: dict[str, Any] | None,
                  shard: int, force: bool, flow_run_id: str | None) -> list[dict[str, Any]]:
    """Run every unit of ``shard`` for the stage at ``target``; return their small summaries.

    A unit-level failure raises (after ``run_unit`` recorded it in the store) so the caller can retry.
    """
    if flow_run_id:
        # Manifests record the flow run from the environment; a Ray worker does not share the driver's.
        os.environ[FLOW_RUN_ENV] = flow_run_id
    spec = load_spec(target)
    cfg = validate_config(DatasetConfig, config, "<build-dataset config>")
    store = ArtifactStore(store_root, storage_options)
    return [r.summary() for r in spec.run_shard(store, cfg, shard, force=force)]


def plan_job(target: str, config: dict[str, Any], store_root: str,
             storage_options: dict[str, Any] | None) -> list[int]:
    """The shard indices the stage at ``target`` has for this dataset."""
    spec = load_spec(target)
    cfg = validate_config(DatasetConfig, config, "<build-dataset config>")
    # Planning reads committed shards of the stage's inputs: through the index (one snapshot per artifact).
    return list(spec.plan_shards(ArtifactStore(store_root, storage_options, use_index=True), cfg))
