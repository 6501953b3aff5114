"""The ``pretrain`` Prefect flow: train the 4M model on committed token shards (``train_stage.pretrain``).

Thin on purpose, like ``build-dataset``: it validates the train config (a preset name such as ``demo`` or
``4m21_b``, or a YAML path, plus dotted overrides), checks the token shards are there, and runs one
retried task that calls :func:`train_stage.pretrain.run_pretrain`. Caching is the stage's own: the final
checkpoint's manifest carries a cache key over the config, the input token-shard digests and the code
version, so a re-run with the same inputs reuses the checkpoint, and a re-run after a crash resumes the
latest checkpoint made with the same key.

In-process by default (one process, the CPU or the first GPU). With ``nproc_per_node`` the task launches
``torchrun`` (``python -m torch.distributed.run``) on ``python -m train_stage train`` instead, with any
``torchrun_args`` (``--nnodes``, ``--rdzv-endpoint`` ... for several nodes), and reads the committed
checkpoint back from the store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from fourm_core.store import ArtifactStore

from pipelines.errors import retry_unless_permanent
from pipelines.ops import storage_options_from
from pipelines.shard_job import FLOW_RUN_ENV

REPO = Path(__file__).resolve().parents[1]


def train_config(config: str, overrides: dict[str, Any] | None, steps: int | None):
    """The validated TrainConfig of a preset name or YAML path, dotted ``overrides`` and a ``steps`` override."""
    from train_stage.config import load_train_config

    over = dict(overrides or {})
    if steps:
        over["steps"] = steps
    return load_train_config(config, over or None)


def torchrun_command(config_path: str | Path, store_root: str, storage_options: dict[str, Any] | None,
                     log_dir: str | None, force: bool, nproc_per_node: int,
                     torchrun_args: list[str] | None) -> list[str]:
    """``torchrun`` on ``python -m train_stage train``: what this flow launches, and what each node of a
    multi-node job runs (``torchrun_args`` such as ``--nnodes=2 --rdzv-backend=c10d --rdzv-endpoint=head:29400
    --rdzv-id=<job>``; docs/training.md)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc_per_node}",
           *(torchrun_args or ["--standalone"]), "-m", "train_stage", "train", "--config", str(config_path),
           "--store", store_root]
    if storage_options:
        cmd += ["--storage-options", json.dumps(storage_options)]
    if log_dir:
        cmd += ["--log-dir", log_dir]
    if force:
        cmd.append("--force")
    return cmd


@task(task_run_name="pretrain-{run_name}", retries=1, retry_delay_seconds=10, retry_condition_fn=retry_unless_permanent,
      cache_policy=NO_CACHE, persist_result=False)
def train(run_name: str, config: dict[str, Any], store_root: str, storage_options: dict[str, Any] | None,
          log_dir: str | None, force: bool, nproc_per_node: int | None,
          torchrun_args: list[str] | None) -> dict[str, Any]:
    """Run (or reuse) the training; returns the checkpoint's summary (URIs, cache key, losses: never weights)."""
    from train_stage.config import TrainConfig
    from train_stage.pretrain import run_pretrain
    from train_stage.trainer import checkpoint_artifact

    cfg = TrainConfig(**config)
    store = ArtifactStore(store_root, storage_options)
    if not nproc_per_node:
        return run_pretrain(store, cfg, log_dir=log_dir, force=force).summary()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{cfg.run_name}.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        cmd = torchrun_command(path, store_root, storage_options, log_dir, force, nproc_per_node, torchrun_args)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        subprocess.run(cmd, check=True, env=env, cwd=str(REPO))
    m = store.read_manifest(cfg.namespace, checkpoint_artifact(cfg, cfg.steps), None)
    if m is None:
        raise RuntimeError(f"torchrun finished but {cfg.namespace}/{checkpoint_artifact(cfg, cfg.steps)} "
                           "is not committed")
    return {"checkpoint": m.uri, "artifact": m.artifact, "namespace": m.dataset, "cache_key": m.cache_key,
            "status": "done", "steps": m.stats.get("step"), "loss_end": m.stats.get("loss"),
            "inputs": len(m.ingredients.inputs), "log_dir": log_dir,
            "loss_png": str(Path(log_dir) / "loss.png") if log_dir else None}


@flow(name="pretrain", persist_result=False, log_prints=True)
def pretrain(config: str = "demo", store_root: str | None = None, storage_options: dict[str, Any] | None = None,
             overrides: dict[str, Any] | None = None, steps: int | None = None, log_dir: str | None = None,
             force: bool = False, nproc_per_node: int | None = None, torchrun_args: list[str] | None = None,
             retries: int = 1) -> dict[str, Any]:
    """Pre-train per the train config ``config`` on the token shards in ``store_root``.

    ``config``: a train preset (``demo``, ``4m21_b``) or YAML path; ``overrides``: dotted fields
    (``{"batch_size": 32}``); ``steps`` overrides the step count. ``log_dir`` (default ``runs/<run_name>``
    under the working directory) gets ``log.jsonl``, TensorBoard events and ``loss.png``. ``force`` trains
    from scratch even when a checkpoint with the same cache key exists. ``nproc_per_node``: launch torchrun.
    Unset ``store_root`` / ``storage_options`` come from ``FOURM_STORE_ROOT`` / ``FOURM_STORAGE_OPTIONS``.
    """
    from train_stage.pretrain import check_token_shards

    logger = get_run_logger()
    store_root = store_root or os.environ.get("FOURM_STORE_ROOT", "./store")
    storage_options = storage_options if storage_options is not None else storage_options_from(None)
    cfg = train_config(config, overrides, steps)  # a bad config fails here, before any task starts
    store = ArtifactStore(store_root, storage_options)
    check_token_shards(store, cfg)  # missing token shards: a clear error naming them and the command
    log_dir = log_dir or str(Path("runs") / cfg.run_name)
    run_id = flow_run.id
    if run_id:
        os.environ[FLOW_RUN_ENV] = run_id  # the checkpoint manifest records it
    result = train.with_options(retries=retries)(cfg.run_name, cfg.model_dump(mode="json"), store.root_uri,
                                                 storage_options, log_dir, force, nproc_per_node, torchrun_args)
    manifest_path = store.manifest_path(result["namespace"], result["artifact"], None)
    result["manifest"] = store.uri(manifest_path)
    result["checkpoint_dir"] = store.uri(store.artifact_dir(result["namespace"], result["artifact"]))
    logger.info("pretrain %s: %s, checkpoint %s (loss %s -> %s)", cfg.run_name, result["status"],
                result["checkpoint_dir"], result.get("loss_start"), result.get("loss_end"))
    _publish(cfg.run_name, result)
    return result


def _publish(run_name: str, result: dict[str, Any]) -> None:
    key = "pretrain-" + "".join(c if c.isalnum() else "-" for c in run_name.lower())
    lines = [f"# pretrain {run_name}: {result['status']}", "",
             f"* checkpoint: `{result['checkpoint_dir']}` (step {result.get('steps')})",
             f"* cache key: `{result['cache_key']}`",
             f"* loss: {result.get('loss_start')} -> {result.get('loss_end')}",
             f"* trained on {result.get('inputs')} token shard parts (lineage: "
             f"`python -m pipelines lineage {result['manifest']}`)",
             f"* logs: `{result.get('log_dir')}` (loss curve `{result.get('loss_png')}`)"]
    create_markdown_artifact(key=key, markdown="\n".join(lines), description=f"pretrain {run_name}")
