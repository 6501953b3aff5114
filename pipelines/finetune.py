"""The ``finetune`` Prefect flow: fine-tune a committed checkpoint (ours, or a released one committed with
``python -m train_stage import-pretrained``) on token shards, full or LoRA.

A fine-tuning run is a training run whose config has ``init_from`` (and optionally ``lora``), so this flow
is the ``pretrain`` flow's body under its own name: the same validation, token-shard check, retried
training task, caching by cache key (which includes the starting checkpoint's digest), resume, lineage and
torchrun launch. It refuses a config without ``init_from``.

Then it evaluates the fine-tuned checkpoint against the one it started from on the fine-tuning's task
(``pipelines.finetune_eval``: the evaluate stage's cached unit, once per checkpoint) and publishes the two side
by side; ``evaluation=None`` skips that.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from pipelines.evaluate import evaluate_unit
from pipelines.finetune_eval import compare_rows, comparison_markdown, comparison_overrides
from pipelines.ops import storage_options_from
from pipelines.pretrain import pretrain, train_config
from pipelines.report import artifact_key


@flow(name="finetune", persist_result=False, log_prints=True)
def finetune(config: str = "finetune_demo", store_root: str | None = None,
             storage_options: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None,
             steps: int | None = None, log_dir: str | None = None, force: bool = False,
             nproc_per_node: int | None = None, torchrun_args: list[str] | None = None,
             evaluation: str | None = "demo", evaluation_overrides: dict[str, Any] | None = None,
             retries: int = 1) -> dict[str, Any]:
    """Fine-tune per the train config ``config`` (a preset such as ``finetune_demo`` or a YAML path with
    ``init_from``); parameters as for ``pretrain``. Then evaluate the result against the starting checkpoint
    with the eval preset (or YAML) ``evaluation`` set to the fine-tuning's task, plus dotted
    ``evaluation_overrides`` (e.g. ``{"dataset": "demo-heldout", "max_samples": 64}``); None: no evaluation.
    The result's ``comparison`` lists the metrics both have, with ``better`` per row."""
    cfg = train_config(config, overrides, steps)
    if cfg.init_from is None:
        raise ValueError(f"train config {config!r} has no init_from: a fine-tuning names the checkpoint it starts "
                         "from (init_from: {run: ...}); use the pretrain flow to train from scratch")
    result = pretrain.fn(config=config, store_root=store_root, storage_options=storage_options, overrides=overrides,
                         steps=steps, log_dir=log_dir, force=force, nproc_per_node=nproc_per_node,
                         torchrun_args=torchrun_args, retries=retries)
    if evaluation:
        result["comparison"] = compare_with_start(cfg, result, evaluation, evaluation_overrides, store_root,
                                                  storage_options, force, retries)
    return result


def compare_with_start(cfg, result: dict[str, Any], evaluation: str, evaluation_overrides: dict[str, Any] | None,
                       store_root: str | None, storage_options: dict[str, Any] | None, force: bool,
                       retries: int) -> list[dict[str, Any]]:
    """Evaluate the fine-tuned checkpoint (``result``) and ``cfg.init_from`` on the fine-tuning's task; the rows
    both have, side by side (``pipelines.finetune_eval.compare_rows``), also published as a Prefect artifact."""
    from eval_stage.config import load_eval_config

    logger = get_run_logger()
    store_root = store_root or os.environ.get("FOURM_STORE_ROOT", "./store")
    storage_options = storage_options if storage_options is not None else storage_options_from(None)
    base = comparison_overrides(cfg, evaluation_overrides)
    start = cfg.init_from
    tuned_step = int(result["artifact"].rsplit("-", 1)[1])
    rows = {}
    for which, (namespace, run, step) in {"finetuned": (cfg.namespace, cfg.run_name, tuned_step),
                                          "pretrained": (start.namespace, start.run, start.step)}.items():
        ecfg = load_eval_config(evaluation, {**base, "checkpoint.namespace": namespace, "checkpoint.run": run,
                                             "checkpoint.step": step})
        summary = evaluate_unit.with_options(retries=retries)(run, ecfg.model_dump(mode="json"), store_root,
                                                              storage_options, force)
        rows[which] = summary["rows"]
        logger.info("evaluated %s %s/%s: %s (%s)", which, namespace, run, summary["status"], summary["uri"])
    table = compare_rows(rows["finetuned"], rows["pretrained"])
    if not table:
        raise RuntimeError(f"the evaluations of {cfg.run_name} and {start.run} have no metric in common; "
                           f"check evaluation_overrides {evaluation_overrides}")
    create_markdown_artifact(key=artifact_key("finetune", cfg.run_name, "comparison", store_root=store_root),
                             markdown=comparison_markdown(cfg.run_name, start.run, table),
                             description=f"{cfg.run_name} vs {start.run}")
    for r in table:
        logger.info("%s %s (%s) %s: fine-tuned %s, pre-trained %s%s", r["task"], r["target"], r["reference"],
                    r["metric"], r["finetuned"], r["pretrained"], "" if r["better"] is None else
                    (" (better)" if r["better"] else " (not better)"))
    return table
