"""The contract between a stage library and the orchestration layer.

A stage is a plain library. It exposes one :class:`StageSpec` that says which shards it has for a
dataset and how to run one shard. ``pipelines`` (Prefect) and Ray only call these two functions, so a
stage runs and tests the same with no Prefect server and no Ray cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from .config import DatasetConfig
from .store import ArtifactStore
from .units import UnitResult


class PlanShards(Protocol):
    def __call__(self, store: ArtifactStore, config: DatasetConfig) -> list[int]: ...


class RunShard(Protocol):
    def __call__(self, store: ArtifactStore, config: DatasetConfig, shard: int, *, force: bool = False) -> list[UnitResult]: ...


@dataclass(frozen=True)
class StageSpec:
    """A stage as the orchestrator sees it.

    ``plan_shards`` returns the shard indices the stage has for a dataset (for ingestion: from the
    sources; for later stages: the committed shards of their inputs). ``run_shard`` runs every unit of
    one shard (a labeler stage has one unit per labeler) and returns their results; a unit-level
    failure raises, so the orchestrator can retry it.
    """

    name: str
    plan_shards: PlanShards
    run_shard: RunShard
    artifacts: tuple[str, ...] = field(default_factory=tuple)  # artifacts its units commit, for `status`
    heavy: bool = True  # run shards as Ray tasks when a Ray runtime is requested
    num_cpus: float = 1.0
    num_gpus: float = 0.0
