"""The ``chain`` Prefect flow: build-dataset -> pretrain -> evaluate with no person in between.

Each step stays its own deployment and flow run (``run_deployment``): it runs on its own work pool (the
dataset on ``fourm-cpu``, pretrain and evaluate on ``fourm-gpu``), keeps its own cache (manifests), and can be
re-run alone. The chain only orders them and passes what one step made to the next:

1. the build-dataset deployment; the chain stops if it does not complete;
2. pretrain, once the token shards its train config needs are committed (checked here from the store, so a
   GPU worker is not asked for when they are missing);
3. evaluate on the checkpoint that pretrain committed (its namespace, run name and final step are passed as
   ``checkpoint.*`` overrides), so every new checkpoint gets its evaluation; a cached pretrain gives a cached
   evaluation.

Parameters given to the chain are merged over each deployment's own parameters (read from the server).
"""

from __future__ import annotations

import os
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

from fourm_core.store import ArtifactStore

from pipelines.ops import storage_options_from


class ChainStepFailed(RuntimeError):
    """A step's flow run ended in a state other than Completed; later steps are not started."""


def _deployment_parameters(name: str) -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        return dict(client.read_deployment_by_name(name).parameters or {})


def _step(name: str, parameters: dict[str, Any]) -> str:
    """Run deployment ``name`` with ``parameters`` as a child flow run; wait for it; its flow-run id."""
    logger = get_run_logger()
    run = run_deployment(name, parameters=parameters, timeout=None, poll_interval=2)
    state = run.state
    if state is None or not state.is_completed():
        raise ChainStepFailed(f"{name} (flow run {run.id}) ended {state.type.value if state else 'without a state'}: "
                              f"{state.message if state else ''}; later steps not run. Fix it and re-run the chain "
                              "(finished steps are cached)")
    logger.info("%s completed (flow run %s)", name, run.id)
    return str(run.id)


@flow(name="chain", persist_result=False, log_prints=True)
def chain(build: str | list[str] = "build-dataset/demo", pretrain: str = "pretrain/demo", evaluate: str = "evaluate/demo",
          store_root: str | None = None, storage_options: dict[str, Any] | None = None,
          build_parameters: dict[str, Any] | None = None, pretrain_parameters: dict[str, Any] | None = None,
          evaluate_parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the deployments ``build`` -> ``pretrain`` -> ``evaluate`` in order on one store.

    ``build`` may list several build-dataset deployments, run in that order (chain/demo: the demo, then its
    held-out scenes, which evaluate/demo scores); ``build_parameters`` go to each.

    ``store_root`` / ``storage_options`` (default: the workers' ``FOURM_STORE_ROOT`` /
    ``FOURM_STORAGE_OPTIONS``) go to every step; ``*_parameters`` are merged over each deployment's own.
    """
    from eval_stage.config import load_eval_config
    from train_stage.pretrain import check_token_shards
    from train_stage.trainer import checkpoint_artifact

    from pipelines.pretrain import train_config

    logger = get_run_logger()
    common = {k: v for k, v in (("store_root", store_root), ("storage_options", storage_options)) if v is not None}
    root = store_root or os.environ.get("FOURM_STORE_ROOT", "./store")
    store = ArtifactStore(root, storage_options if storage_options is not None else storage_options_from(None))

    # Validate the later steps' configs before the first step starts: a typo fails now, not after the build.
    train_params = {**_deployment_parameters(pretrain), **(pretrain_parameters or {})}
    cfg = train_config(train_params.get("config", "demo"), train_params.get("overrides"), train_params.get("steps"))
    eval_params = {**_deployment_parameters(evaluate), **(evaluate_parameters or {})}
    checkpoint = {"checkpoint.namespace": cfg.namespace, "checkpoint.run": cfg.run_name, "checkpoint.step": cfg.steps}
    eval_params["overrides"] = {**(eval_params.get("overrides") or {}), **checkpoint}
    load_eval_config(eval_params.get("config", "demo"), eval_params["overrides"])

    builds = [build] if isinstance(build, str) else list(build)
    runs = {"build": _step(builds[0], {**common, **(build_parameters or {})})}
    for i, name in enumerate(builds[1:], start=2):
        runs[f"build-{i}"] = _step(name, {**common, **(build_parameters or {})})
    check_token_shards(store, cfg)  # permanent when missing: names the artifacts and the command that makes them
    runs["pretrain"] = _step(pretrain, {**common, **(pretrain_parameters or {})})
    final = store.read_manifest(cfg.namespace, checkpoint_artifact(cfg, cfg.steps), None)
    if final is None:
        raise ChainStepFailed(f"{pretrain} completed but {cfg.namespace}/{checkpoint_artifact(cfg, cfg.steps)} is "
                              "not committed")
    runs["evaluate"] = _step(evaluate, {**common, **(evaluate_parameters or {}), "overrides": eval_params["overrides"]})
    logger.info("chain: %s -> %s (checkpoint %s) -> %s", build, pretrain, final.uri, evaluate)
    return {"flow_runs": runs, "checkpoint": final.uri, "checkpoint_cache_key": final.cache_key}
