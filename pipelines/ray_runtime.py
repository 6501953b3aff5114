"""Joining Ray and dispatching shard jobs to it. No Prefect imports (see shard_job).

The address is resolved in one place, :mod:`fourm_core.ray_address` (parameter -> ``FOURM_RAY_ADDRESS``
-> local); this module only joins it.
"""

from __future__ import annotations

from typing import Any

from fourm_core.ray_address import RayTarget


def connect(target: RayTarget) -> bool:
    """Join ``target`` (see :meth:`RayTarget.join`); True when the caller owns the shutdown."""
    return target.join()


def shutdown() -> None:
    import ray

    ray.shutdown()


def run_remote(target: str, num_cpus: float, num_gpus: float, *args: Any, name: str | None = None) -> list[dict[str, Any]]:
    """Run ``shard_job.run_shard_job(target, *args)`` as one Ray task and wait for its summaries.

    ``name`` labels the task in the dashboard and the state API (``ray list tasks``), e.g. ``tokenize/shard-00003``.

    Ray does not retry application errors here (``retry_exceptions`` stays off): Prefect's task retries
    own that, so a failing shard is retried once per Prefect attempt and shows in the Prefect UI.
    """
    import ray

    from .shard_job import run_shard_job

    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(run_shard_job)
    if name:
        remote = remote.options(name=name)
    try:
        return ray.get(remote.remote(target, *args))
    except ray.exceptions.RayTaskError as err:
        # Re-raise the stage's own exception type and message so Prefect and the logs show the real cause.
        cause = err.as_instanceof_cause()
        raise cause from None
