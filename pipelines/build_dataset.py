"""The ``build-dataset`` Prefect flow: run a dataset's stages, shard by shard, as retried Prefect tasks.

Thin on purpose. Stages are plain libraries (``fourm_core.stage.StageSpec``); this flow only
validates the config, plans shards, submits one task per shard (each dispatching to Ray when the
stage is heavy), records what happened, and publishes it as Prefect artifacts. What to skip is
decided by the stages' manifests (cache keys), never by Prefect's result cache.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from fourm_core.config import load_dataset_config
from fourm_core.ray_address import resolve_ray_address
from fourm_core.store import ArtifactStore

from fourm_core.stage import StageSpec

from pipelines import ray_runtime, report
from pipelines.dag import Callbacks, ShardDag
from pipelines.errors import retry_unless_permanent
from pipelines.futures import wait_any
from pipelines.run_log import forward_progress
from pipelines.ops import storage_options_from
from pipelines.planning import compact_units, split_cached
from pipelines.shard_job import FLOW_RUN_ENV, plan_job, run_shard_job
from pipelines.stages import get_stages, registry

# Units in flight at once per flow run (threads that wait on Ray or run units in-process). The default
# thread runner is unbounded, which would start thousands of threads on a 12M-sample dataset.
MAX_PARALLEL_UNITS = int(os.environ.get("FOURM_MAX_PARALLEL_UNITS", "8"))


# Retries are for transient failures only: a missing source file, a bad config or an unknown stage fails at once
# (pipelines.errors decides which is which).
@task(task_run_name="plan-{stage}", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_unless_permanent,
      cache_policy=NO_CACHE, persist_result=False)
def plan_shards(stage: str, target: str, config: dict[str, Any], store_root: str,
                storage_options: dict[str, Any] | None) -> list[int]:
    """The shards a stage has for this dataset (ingest: from its sources; later stages: from their inputs)."""
    return plan_job(target, config, store_root, storage_options)


@task(task_run_name="{stage}-shard-{shard}", retries=2, retry_delay_seconds=[2, 15],
      retry_condition_fn=retry_unless_permanent, cache_policy=NO_CACHE, persist_result=False)
def run_shard(stage: str, target: str, config: dict[str, Any], store_root: str,
              storage_options: dict[str, Any] | None, shard: int, force: bool, on_ray: bool,
              num_cpus: float, num_gpus: float, flow_run_id: str | None) -> list[dict[str, Any]]:
    """Run one shard of one stage; returns its units' summaries (URIs, digests, counts: never data)."""
    args = (config, store_root, storage_options, shard, force, flow_run_id)
    if on_ray:
        return ray_runtime.run_remote(target, num_cpus, num_gpus, *args, name=f"{stage}/shard-{shard:05d}")
    return run_shard_job(target, *args)


@flow(name="build-dataset", task_runner=ThreadPoolTaskRunner(max_workers=MAX_PARALLEL_UNITS), persist_result=False,
      log_prints=True)
def build_dataset(dataset: str = "demo", store_root: str | None = None, storage_options: dict[str, Any] | None = None,
                  stages: list[str] | None = None, shards: list[int] | None = None, force: bool = False,
                  ray_address: str | None = None, overrides: dict[str, Any] | None = None,
                  retries: int = 2, pipeline: bool = True) -> dict[str, Any]:
    """Build ``dataset`` (a preset name or a YAML path) into ``store_root``.

    ``stages`` defaults to the config's ``stages``; ``shards`` limits every stage to those shard indices;
    ``force`` redoes the selected units even when their manifests match (that is ``rerun``).
    ``ray_address`` (else ``FOURM_RAY_ADDRESS``, else a local Ray): ``host:port`` of a cluster's head,
    ``auto``, ``ray://host:port``, ``local``, or ``off`` to run units in-process (see
    :mod:`fourm_core.ray_address`). Joined once, before the first stage that needs Ray: heavy stages'
    shards run as Ray tasks there, and stages that drive Ray themselves (pseudolabel) use the same cluster.
    ``overrides`` are dotted config fields (``{"ingest.shard_size": 8}``).
    ``pipeline``: a shard's next stage starts as soon as what it reads is committed (pipelines/dag.py); False
    runs stage by stage (every shard of a stage before any of the next), for comparison.

    Unset ``store_root`` / ``storage_options`` / ``ray_address`` come from the worker's environment
    (``FOURM_STORE_ROOT``, ``FOURM_STORAGE_OPTIONS`` as JSON, ``FOURM_RAY_ADDRESS``), so one deployment
    runs unchanged on a laptop and on a cluster whose workers set those.
    """
    logger = get_run_logger()
    forward_progress()  # the stages' own progress (e.g. tokenizer training steps) into this run's log
    store_root = store_root or os.environ.get("FOURM_STORE_ROOT", "./store")
    storage_options = storage_options if storage_options is not None else storage_options_from(None)
    ray_target = resolve_ray_address(ray_address)
    # Everything that can be wrong with the request fails here, before any task starts.
    config = load_dataset_config(dataset, overrides)
    specs = get_stages(list(stages or config.stages))
    if not ray_target.uses_ray and (driving := [s.name for s in specs if s.drives_ray(config)]):
        raise ValueError(f"stage(s) {driving} run a Ray pipeline with this config but Ray is off "
                         f"({ray_target.source}); give a Ray address, or run them in-process "
                         f"(e.g. overrides {{\"pseudolabel.runner\": \"local\"}})")
    targets = registry()
    cfg = config.model_dump(mode="json")
    store = ArtifactStore(store_root, storage_options, use_index=True)
    run_id = flow_run.id
    if run_id:
        os.environ[FLOW_RUN_ENV] = run_id  # units run in this process record it in their manifests
    started = datetime.now(timezone.utc)

    logger.info("Ray: %s", ray_target.describe())
    dag = ShardDag(specs, config, shards, pipelined=pipeline)
    ray_state = {"connected": False, "ours": False}
    task_fn = run_shard.with_options(retries=retries)

    def submit(spec: StageSpec, shard: int):
        on_ray = ray_target.uses_ray and spec.heavy
        if (on_ray or spec.drives_ray(config)) and not ray_state["connected"]:
            ray_state["ours"] = ray_runtime.connect(ray_target)  # joined once, before the first unit needing it
            ray_state["connected"] = True
        return task_fn.submit(spec.name, targets[spec.name], cfg, store.root_uri, storage_options, shard, force,
                              on_ray, spec.num_cpus, spec.num_gpus, run_id)

    def cached(spec: StageSpec, selected: list[int]):
        # Shards whose every unit is already committed with its cache key are reported from the index without
        # dispatching anything (no task, no Ray start): one snapshot read per artifact.
        return split_cached(store, spec, config, selected, force)

    callbacks = Callbacks(
        plan=lambda spec: plan_shards(spec.name, targets[spec.name], cfg, store.root_uri, storage_options),
        peek=lambda spec: plan_job(targets[spec.name], cfg, store.root_uri, storage_options),
        cached=cached, submit=submit, wait=wait_any,
        result=lambda fut: fut.result(), log=logger.info, refresh=store.invalidate, max_in_flight=MAX_PARALLEL_UNITS,
        release=lambda spec: spec.release() if spec.release and ray_state["connected"] else None)
    error: Exception | None = None  # a failure outside the units (planning, the cached check, Ray start)
    try:
        dag.run(callbacks)
    except Exception as exc:  # still write the run record and the artifacts, then fail the run with it
        error = exc
    finally:
        if ray_state["ours"]:
            ray_runtime.shutdown()
    summaries = dag.summaries
    plan = dag.plans
    for name, blocked in dag.blocked.items():
        logger.error("stage %s: shard(s) %s not run: an input they read failed", name, sorted(blocked))

    record = {"dataset": config.name, "config_source": dataset, "store_root": store.root_uri, "flow_run_id": run_id,
              "started": started.isoformat(), "finished": datetime.now(timezone.utc).isoformat(),
              "stages": [s.name for s in specs], "shards": shards, "force": force, "plan": plan,
              "stage_artifacts": {s.name: list(s.dataset_artifacts(config)) for s in specs},
              "artifact_plan": {a: s.expected_shards(config, a, plan[s.name]) for s in specs if s.name in plan
                                for a in s.dataset_artifacts(config)},
              "not_run": dag.not_run(), "blocked": {k: sorted(v) for k, v in dag.blocked.items()},
              "pipelined": pipeline,
              # seconds from `started`: first unit dispatched -> last unit finished, per stage that ran something
              "stage_spans": {k: [round(t - started.timestamp(), 1) for t in v] for k, v in dag.spans.items()},
              "error": f"{type(error).__name__}: {error}" if error else None}
    record["units"], record["cached"] = compact_units(summaries)
    record_id = f"{started:%Y%m%dT%H%M%S%f}-{(run_id or 'local')[:8]}"
    store.write_run_record(config.name, record_id, record)
    _publish(config.name, store.root_uri, run_id, summaries, record["error"])
    if error is not None:
        raise error

    failed = [s for s in summaries if s["status"] == "failed"]
    if failed:
        raise RuntimeError(f"{len(failed)} unit(s) failed: " + "; ".join(f"{s['unit']}: {s['error']}" for s in failed[:5]))
    counts = {k: sum(1 for s in summaries if s["status"] == k) for k in ("done", "cached")}
    logger.info("build-dataset %s: %d units done, %d cached", config.name, counts["done"], counts["cached"])
    return {"dataset": config.name, "store_root": store.root_uri, "run_record": record_id, **counts,
            "units": [{k: s[k] for k in ("unit", "stage", "shard", "status", "rows", "errors")} for s in summaries]}


def _publish(dataset: str, store_root: str, run_id: str | None, summaries: list[dict[str, Any]],
             error: str | None = None) -> None:
    """Prefect artifacts: the window onto our manifests in the Prefect UI (keys per dataset *and* store)."""
    key = report.artifact_key("build-dataset", dataset, store_root=store_root)
    create_table_artifact(key=key, table=report.unit_rows(summaries), description=f"stage x shard units of {dataset}")
    markdown = report.markdown_summary(dataset, store_root, run_id, summaries)
    if error:
        markdown += f"\n\n## The run failed outside its units\n\n`{error}`"
    create_markdown_artifact(key=key + "-summary", markdown=markdown, description=f"build-dataset summary for {dataset}")
