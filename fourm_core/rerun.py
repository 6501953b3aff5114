"""The exact commands that re-run one unit, for ``status``, ``lineage``, ``verify`` and error messages.

Two forms: the CLI (``python -m pipelines rerun``) and the Prefect deployment (``prefect deployment run
build-dataset/<dataset>``; the deployments in prefect.yaml are named after their dataset). The unit's stage
name in a manifest can be a sub-unit (``tokenize.crops``): the orchestrated stage is the part before the dot.
"""

from __future__ import annotations

import json
import shlex


def orchestrated_stage(unit_stage: str) -> str:
    return unit_stage.split(".")[0]


def rerun_commands(dataset: str, stage: str, shard: int | None | list[int], root: str,
                   deployment_name: str | None = None) -> tuple[str, str]:
    """(CLI form, ``prefect deployment run`` form) that redo exactly this (stage, shard(s)) with force.

    ``dataset`` is what the CLI takes (a preset name or the YAML path); ``deployment_name`` the dataset's name,
    which names its build-dataset deployment (default: ``dataset``)."""
    stage = orchestrated_stage(stage)
    shards = [] if shard is None else [shard] if isinstance(shard, int) else list(shard)
    shard_args = "".join(f" --shard {s}" for s in shards)
    cli = f"python -m pipelines rerun --dataset {shlex.quote(dataset)} --stage {shlex.quote(stage)}{shard_args} " \
          f"--root {shlex.quote(root)}"
    params = [f"stages={json.dumps([stage])}", "force=true", f"store_root={root}"]
    if shards:
        params.insert(1, f"shards={json.dumps(shards)}")
    deployment = f"prefect deployment run build-dataset/{shlex.quote(deployment_name or dataset)} " + " ".join(
        f"--param {shlex.quote(p)}" for p in params)
    return cli, deployment
