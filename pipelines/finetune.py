"""The ``finetune`` Prefect flow: fine-tune a committed checkpoint (ours, or a released one committed with
``python -m train_stage import-pretrained``) on token shards, full or LoRA.

A fine-tuning run is a training run whose config has ``init_from`` (and optionally ``lora``), so this flow
is the ``pretrain`` flow's body under its own name: the same validation, token-shard check, retried
training task, caching by cache key (which includes the starting checkpoint's digest), resume, lineage and
torchrun launch. It refuses a config without ``init_from``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from pipelines.pretrain import pretrain, train_config


@flow(name="finetune", persist_result=False, log_prints=True)
def finetune(config: str = "finetune_demo", store_root: str | None = None,
             storage_options: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None,
             steps: int | None = None, log_dir: str | None = None, force: bool = False,
             nproc_per_node: int | None = None, torchrun_args: list[str] | None = None,
             retries: int = 1) -> dict[str, Any]:
    """Fine-tune per the train config ``config`` (a preset such as ``finetune_demo`` or a YAML path with
    ``init_from``); parameters as for ``pretrain``."""
    cfg = train_config(config, overrides, steps)
    if cfg.init_from is None:
        raise ValueError(f"train config {config!r} has no init_from: a fine-tuning names the checkpoint it starts "
                         "from (init_from: {run: ...}); use the pretrain flow to train from scratch")
    return pretrain.fn(config=config, store_root=store_root, storage_options=storage_options, overrides=overrides,
                       steps=steps, log_dir=log_dir, force=force, nproc_per_node=nproc_per_node,
                       torchrun_args=torchrun_args, retries=retries)
