"""Ingestion: URL lists (CC12M, COYO), folders, WebDataset, C4 text and the offline demo sources -> image shards.

Public API: ``STAGE`` (the fourm_core StageSpec), ``run_shard``, ``plan_shards``, ``artifacts_for``;
``python -m ingest_stage`` is the CLI. See docs/ingest.md.
"""

from .stage import CODE_VERSION, STAGE, artifacts_for, plan_shards, run_shard

__all__ = ["CODE_VERSION", "STAGE", "artifacts_for", "plan_shards", "run_shard"]
