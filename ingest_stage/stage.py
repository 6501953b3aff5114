"""The ingestion stage as the orchestrator sees it: ``STAGE`` (a fourm_core StageSpec).

Unit = (ingest, images[+ground_truth] or texts, shard). Its cache key covers the stage code version, the
normalised ingest config (minus fields that cannot change the output), the configs of the sources that
feed the shard, and a digest of the shard's slice of each source (URLs + captions for URL lists, file
identities for local files), so editing one line of a URL list recomputes only the shard that holds it.
"""

from __future__ import annotations

import traceback
from functools import lru_cache
from typing import Any, Callable

from fourm_core.config import DatasetConfig
from fourm_core.manifest import flow_run_id, hostname, now
from fourm_core.stage import StageSpec
from fourm_core.store import ArtifactStore
from fourm_core.units import Unit, UnitResult, run_unit

from .builder import build_image_shard, build_text_shard
from .plan import Plan, build_plan

# Bump when a change to this package changes what a shard holds for the same inputs and config.
CODE_VERSION = "ingest/3"  # 3: source-rooted keys, filters, caption cleaning, meta column, digest files
STAGE_NAME = "ingest"


def artifacts_for(config: DatasetConfig) -> list[str]:
    """The artifacts each ingest unit of this dataset commits (first one carries the errors table)."""
    if config.text_only:
        return ["texts"]
    if any(s.kind == "synthetic" for s in config.sources):
        return ["images", "ground_truth"]
    return ["images"]


def plan_shards(store: ArtifactStore, config: DatasetConfig) -> list[int]:
    """Every shard index of the dataset (from the sources; the store is not needed to know them)."""
    # A new plan re-reads the sources: a long-lived process (a served flow, a test) must see the lines a URL
    # list gained since its last run. The shard_units calls that follow within the run reuse this plan.
    _orchestrator_plan.cache_clear()
    return list(range(_orchestrator_plan(config.model_dump_json()).n_shards))


@lru_cache(maxsize=4)
def _orchestrator_plan(config_json: str) -> Plan:
    # The orchestrator plans once and then checks every shard's cache state: list the sources once per
    # process and config, not once per shard (a CC12M URL list is 12M lines).
    return build_plan(DatasetConfig.model_validate_json(config_json))


def shard_units(store: ArtifactStore, config: DatasetConfig, shard: int) -> list[Unit]:
    """The unit of one shard, for the orchestrator's cached-or-not check (nothing is run)."""
    return [make_unit(_orchestrator_plan(config.model_dump_json()), shard)]


def _key_config(plan: Plan, shard: int) -> dict[str, Any]:
    ingest = plan.config.ingest.model_dump(mode="json")
    ingest["download"].pop("concurrency")  # how many requests run at once cannot change what a shard holds
    slices = plan.slices(shard)
    return {
        "text_only": plan.config.text_only,
        "ingest": ingest,
        "slices": [{"source": sl.source.position, "config": sl.source.cfg.model_dump(mode="json"),
                    "start": sl.start, "stop": sl.stop, "global_start": sl.global_start,
                    "digest": sl.source.slice_digest(plan.refs(sl))} for sl in slices],
    }


def make_unit(plan: Plan, shard: int) -> Unit:
    return Unit(stage=STAGE_NAME, dataset=plan.config.name, artifacts=artifacts_for(plan.config), shard=shard,
                code_version=CODE_VERSION, config=_key_config(plan, shard))


def run_shard(store: ArtifactStore, config: DatasetConfig, shard: int, *, force: bool = False,
              progress: Callable[[int], None] | None = None, plan: Plan | None = None) -> list[UnitResult]:
    """Ingest one shard (cached: a committed shard with the same cache key is not redone).

    ``progress`` is called with the number of samples finished, as they finish. ``plan`` may be passed by
    callers that run many shards in one process, to list the sources once.
    """
    plan = plan or build_plan(config)
    try:
        unit = make_unit(plan, shard)  # lists the shard's samples (the cache key digests them)
    except Exception as exc:
        # a failure before run_unit (a source that cannot be listed) must leave a record for `status` too
        record_early_failure(store, STAGE_NAME, config.name, artifacts_for(config), shard, exc,
                             "while listing the shard's samples")
        raise
    if config.text_only:
        return [run_unit(store, unit, lambda: build_text_shard(plan, shard, progress), force=force)]
    return [run_unit(store, unit, lambda: build_image_shard(plan, shard, progress), force=force)]


def record_early_failure(store: ArtifactStore, stage: str, dataset: str, artifacts: list[str], shard: int,
                         exc: Exception, when: str) -> None:
    """A failure before ``run_unit`` (while building the unit: listing sources, finding inputs) recorded beside
    the unit's artifacts like run_unit's own, so that `status` shows it."""
    info = {"unit": f"{dataset}/{'+'.join(artifacts)}/shard-{shard:05d}", "stage": stage, "cache_key": None,
            "error": f"{type(exc).__name__} {when}: {exc}", "traceback": traceback.format_exc(),
            "time": now().isoformat(), "host": hostname(), "flow_run_id": flow_run_id()}
    for artifact in artifacts:
        try:
            store.record_failure(dataset, artifact, shard, info)
        except Exception:  # the store may be what failed; the original error matters more
            pass


STAGE = StageSpec(
    name=STAGE_NAME,
    plan_shards=plan_shards,
    run_shard=run_shard,
    artifacts=("images", "ground_truth", "texts"),
    heavy=True,
    num_cpus=1.0,
    artifacts_for=artifacts_for,
    shard_units=shard_units,
)
