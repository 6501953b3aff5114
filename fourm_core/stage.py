"""The contract between a stage library and the orchestration layer.

A stage is a plain library. It exposes one :class:`StageSpec` that says which shards it has for a
dataset and how to run one shard. ``pipelines`` (Prefect) and Ray only call these two functions, so a
stage runs and tests the same with no Prefect server and no Ray cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from .config import DatasetConfig
from .store import ArtifactStore
from .units import Unit, UnitResult, UnitStatus, collecting_units, is_cached


class PlanShards(Protocol):
    def __call__(self, store: ArtifactStore, config: DatasetConfig) -> list[int]: ...


class RunShard(Protocol):
    def __call__(self, store: ArtifactStore, config: DatasetConfig, shard: int, *,
                 force: bool = False) -> list[UnitResult]: ...


class ArtifactsFor(Protocol):
    def __call__(self, config: DatasetConfig) -> list[str]: ...


class ArtifactShards(Protocol):
    def __call__(self, config: DatasetConfig, artifact: str, shards: list[int]) -> list[int]: ...


class UsesRay(Protocol):
    def __call__(self, config: DatasetConfig) -> bool: ...


class ReadsShards(Protocol):
    def __call__(self, config: DatasetConfig, shard: int) -> list[int] | None: ...


class ShardUnits(Protocol):
    def __call__(self, store: ArtifactStore, config: DatasetConfig, shard: int) -> list[Unit]: ...


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
    # The artifacts this dataset's units commit (``status`` lists only those); defaults to ``artifacts``.
    artifacts_for: ArtifactsFor | None = None
    # The units of one shard, without running them: lets the orchestrator see that a shard is fully cached
    # (every unit has a manifest with its cache key) and skip dispatching it, e.g. without starting Ray.
    shard_units: ShardUnits | None = None
    # Of the planned shards, those where this dataset's config makes ``artifact`` (default: all of them),
    # e.g. raw features only on the feature subset; ``status`` reports the others as not expected.
    artifact_shards: ArtifactShards | None = None
    # True when ``run_shard`` itself drives Ray in the calling process for this config (e.g. a Ray Data
    # pipeline): the orchestrator joins its Ray address before calling it, so the stage uses that cluster.
    uses_ray: UsesRay | None = None
    # Per-shard pipelining (pipelines/dag.py). ``after``: the stages whose outputs this one reads (None: every
    # earlier stage of the run); a shard waits only for those. ``reads_shards(config, shard)``: which of their
    # shards one unit reads; unset: the same shard; None from it: all of them (the whole dataset).
    # ``whole_dataset``: the stage's units are read by every shard of the stages after it (trained tokenizers).
    after: tuple[str, ...] | None = None
    reads_shards: ReadsShards | None = None
    whole_dataset: bool = False
    # Frees what ``run_shard`` keeps alive across the shards of a run in this process (pseudolabel's labeler
    # actors); the orchestrator calls it once no shard of the stage is left to run, and at the end of a run.
    release: Callable[[], None] | None = None

    def drives_ray(self, config: DatasetConfig) -> bool:
        return bool(self.uses_ray and self.uses_ray(config))

    def shards_read(self, config: DatasetConfig, shard: int) -> list[int] | None:
        """The shards of the stages in ``after`` that unit ``shard`` reads (None: all of them)."""
        return [shard] if self.reads_shards is None else self.reads_shards(config, shard)

    def expected_shards(self, config: DatasetConfig, artifact: str, shards: list[int]) -> list[int]:
        return list(self.artifact_shards(config, artifact, shards)) if self.artifact_shards else list(shards)

    def dataset_artifacts(self, config: DatasetConfig) -> tuple[str, ...]:
        return tuple(self.artifacts_for(config)) if self.artifacts_for else self.artifacts

    def cached_results(self, store: ArtifactStore, config: DatasetConfig, shard: int,
                       check_sizes: bool = True) -> list[UnitResult] | None:
        """The shard's results if every unit is committed with its current cache key, else None (or unknown).
        ``check_sizes=False``: the data files' sizes are left to :func:`~fourm_core.units.sizes_intact`."""
        if self.shard_units is None:
            return None
        try:
            units = self.shard_units(store, config, shard)
        except Exception:  # e.g. a missing input: running the shard reports it properly
            return None
        results = []
        base = store.root_base if store.use_index else None  # index entries' URIs are relative to the root
        for unit in units:
            manifests = is_cached(store, unit, check_sizes=check_sizes)
            if manifests is None:
                return None
            results.append(UnitResult(unit.label, unit.stage, unit.artifacts, unit.shard, UnitStatus.CACHED,
                                      manifests, uri_base=base))
        return results or None

    def shard_is_cached(self, store: ArtifactStore, config: DatasetConfig, shard: int) -> bool:
        return self.cached_results(store, config, shard) is not None


def units_of_run_shard(run_shard: RunShard) -> ShardUnits:
    """``shard_units`` for a stage whose ``run_shard`` does no work outside its units' ``compute``: run it
    with :func:`~fourm_core.units.collecting_units`, so the units come from the same code that runs them."""

    def shard_units(store: ArtifactStore, config: DatasetConfig, shard: int) -> list[Unit]:
        with collecting_units() as units:
            run_shard(store, config, shard)
        return units

    return shard_units
