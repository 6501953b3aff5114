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
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from pipelines.evaluate import evaluate_unit
from pipelines.finetune_eval import compare_rows, comparison_configs, comparison_markdown
from pipelines.ops import storage_options_from
from pipelines.pretrain import pretrain, train_config
from pipelines.report import artifact_key

if TYPE_CHECKING:
    from eval_stage.config import EvalConfig
    from train_stage.config import TrainConfig


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
    evals = comparison_configs(cfg, evaluation, evaluation_overrides) if evaluation else None  # fail early
    result = pretrain.fn(config=config, store_root=store_root, storage_options=storage_options, overrides=overrides,
                         steps=steps, log_dir=log_dir, force=force, nproc_per_node=nproc_per_node,
                         torchrun_args=torchrun_args, retries=retries)
    if evals:
        result["comparison"] = compare_with_start(cfg, evals, store_root, storage_options, force, retries)
    return result


def compare_with_start(cfg: TrainConfig, evals: dict[str, EvalConfig], store_root: str | None,
                       storage_options: dict[str, Any] | None, force: bool, retries: int) -> list[dict[str, Any]]:
    """Run the evaluations ``evals`` (:func:`pipelines.finetune_eval.comparison_configs`: the fine-tuned checkpoint
    and ``cfg.init_from``); the rows both have, side by side (``compare_rows``), also published as a Prefect
    artifact and logged."""
    logger = get_run_logger()
    store_root = store_root or os.environ.get("FOURM_STORE_ROOT", "./store")
    storage_options = storage_options if storage_options is not None else storage_options_from(None)
    rows = {}
    for which, ecfg in evals.items():
        ck = ecfg.checkpoint
        summary = evaluate_unit.with_options(retries=retries)(ck.run, ecfg.model_dump(mode="json"), store_root,
                                                              storage_options, force)
        rows[which] = summary["rows"]
        logger.info("evaluated %s %s/%s: %s (%s)", which, ck.namespace, ck.run, summary["status"], summary["uri"])
    table = compare_rows(rows["finetuned"], rows["pretrained"])
    start = cfg.init_from.run
    if not table:
        raise RuntimeError(f"the evaluations of {cfg.run_name} and {start} have no metric in common; check the "
                           "evaluation and evaluation_overrides parameters")
    create_markdown_artifact(key=artifact_key("finetune", cfg.run_name, "comparison", store_root=store_root),
                             markdown=comparison_markdown(cfg.run_name, start, table),
                             description=f"{cfg.run_name} vs {start}")
    for r in table:
        logger.info("%s %s (%s) %s: fine-tuned %s, pre-trained %s%s", r["task"], r["target"], r["reference"],
                    r["metric"], r["finetuned"], r["pretrained"], "" if r["better"] is None else
                    (" (better)" if r["better"] else " (not better)"))
    return table
