"""Connecting to Ray and dispatching shard jobs to it. No Prefect imports (see shard_job)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

OFF = "off"  # ray_address value meaning "run units in-process, no Ray"

# The directory holding our packages; local Ray workers get it on their PYTHONPATH so they can import
# the stage packages even when the project is not pip-installed (a plain checkout).
PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)


def connect(address: str | None) -> bool:
    """Make sure a Ray runtime is up. Returns True when this call started it (the caller shuts it down).

    ``None`` starts a local Ray (or reuses one already initialised in this process); any other value is
    passed to ``ray.init(address=...)`` (``auto``, ``ray://head:10001``, ...).
    """
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"log_to_driver": True}
    if address:
        # A cluster: its nodes run the project's image/environment; this machine's paths mean nothing there.
        kwargs["address"] = address
    else:
        # A laptop / CI box: local workers see this checkout; keep Ray's footprint small and quiet.
        pythonpath = os.pathsep.join(p for p in (PROJECT_ROOT, os.environ.get("PYTHONPATH", "")) if p)
        kwargs.update(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, include_dashboard=False,
                      configure_logging=False)
    ray.init(**kwargs)
    return True


def shutdown() -> None:
    import ray

    ray.shutdown()


def run_remote(target: str, num_cpus: float, num_gpus: float, *args: Any) -> list[dict[str, Any]]:
    """Run ``shard_job.run_shard_job(target, *args)`` as one Ray task and wait for its summaries.

    Ray does not retry application errors here (``retry_exceptions`` stays off): Prefect's task retries
    own that, so a failing shard is retried once per Prefect attempt and shows in the Prefect UI.
    """
    import ray

    from .shard_job import run_shard_job

    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(run_shard_job)
    try:
        return ray.get(remote.remote(target, *args))
    except ray.exceptions.RayTaskError as err:
        # Re-raise the stage's own exception type and message so Prefect and the logs show the real cause.
        cause = err.as_instanceof_cause()
        raise cause from None
