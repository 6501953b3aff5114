"""The ``evaluate`` Prefect flow: evaluate a pretrain checkpoint and publish the report.

Thin on purpose: ``eval_stage.evaluation.evaluate`` does the work as one cached unit (its manifest's cache
key = checkpoint digest + tokenizer and shard digests + eval config + code version); this flow validates
the config, runs that unit as a retried task, and publishes the metric table and the Markdown report as
Prefect artifacts. A re-run with nothing changed is a cache hit (status ``cached``) and costs manifest reads.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from fourm_core.store import ArtifactStore

from pipelines.errors import retry_unless_permanent
from pipelines.ops import storage_options_from
from pipelines.shard_job import FLOW_RUN_ENV


@task(task_run_name="evaluate-{run}", retries=1, retry_delay_seconds=10, retry_condition_fn=retry_unless_permanent,
      cache_policy=NO_CACHE, persist_result=False)
def evaluate_unit(run: str, config: dict[str, Any], store_root: str, storage_options: dict[str, Any] | None,
                  force: bool) -> dict[str, Any]:
    """Run (or find cached) the evaluation unit; returns its summary (URIs, status, metric rows)."""
    from eval_stage.config import EvalConfig
    from eval_stage.evaluation import evaluate, result_summary

    store = ArtifactStore(store_root, storage_options)
    return result_summary(store, evaluate(store, EvalConfig.model_validate(config), force=force))


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes."""
    return "-".join("".join(c if c.isalnum() else "-" for c in p.lower()) for p in parts).strip("-")


def table_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def f(v):
        return None if v is None else round(float(v), 4)

    return [{"task": r["task"], "target": r["target"], "reference": r["reference"], "metric": r["metric"],
             "model": f(r["model"]), "tokenizer_bound": f(r["tokenizer_bound"]), "baseline": f(r["baseline"]),
             "baseline_kind": r["baseline_kind"], "samples": r["samples"]} for r in rows]


@flow(name="evaluate", persist_result=False, log_prints=True)
def evaluate(config: str = "demo", store_root: str | None = None, storage_options: dict[str, Any] | None = None,
             overrides: dict[str, Any] | None = None, force: bool = False, retries: int = 1) -> dict[str, Any]:
    """Evaluate the checkpoint an eval config names (preset ``demo`` / ``4m21_b`` or a YAML path).

    ``overrides`` are dotted config fields, e.g. ``{"checkpoint.run": "demo", "checkpoint.step": 200,
    "shards": [3]}``. Unset ``store_root`` / ``storage_options`` come from ``FOURM_STORE_ROOT`` /
    ``FOURM_STORAGE_OPTIONS`` on the worker, as for build-dataset.
    """
    from eval_stage.config import load_eval_config

    logger = get_run_logger()
    store_root = store_root or os.environ.get("FOURM_STORE_ROOT", "./store")
    storage_options = storage_options if storage_options is not None else storage_options_from(None)
    cfg = load_eval_config(config, overrides)  # a bad config fails here, before any task
    store = ArtifactStore(store_root, storage_options)
    if flow_run.id:
        os.environ[FLOW_RUN_ENV] = flow_run.id  # the unit's manifest records the flow run
    summary = evaluate_unit.with_options(retries=retries)(cfg.checkpoint.run, cfg.model_dump(mode="json"),
                                                          store.root_uri, storage_options, force)
    key = artifact_key("evaluate", cfg.dataset, cfg.checkpoint.run)
    create_table_artifact(key=key, table=table_rows(summary["rows"]),
                          description=f"evaluation of {cfg.checkpoint.namespace}/{cfg.checkpoint.run} on {cfg.dataset}")
    create_markdown_artifact(key=key + "-report", markdown=summary["report_markdown"]
                             + f"\n\nCommitted: `{summary['uri']}`; grid: `{summary['grid']}`\n",
                             description=f"evaluation report ({summary['status']})")
    logger.info("evaluate %s: %s; report %s; grid %s", summary["unit"], summary["status"], summary["report"],
                summary["grid"])
    return {k: v for k, v in summary.items() if k != "report_markdown"}
