"""Which failures a retry can fix, and the Prefect retry condition that asks.

A unit that fails because S3 hiccuped, a Ray node went away or a download timed out may pass on the next
attempt; Prefect retries those. A unit that fails because its input does not exist, its config is wrong or
its stage is not installed fails the same way every time: retrying only delays the error the operator
needs to see (a nightly run with ``CC12M_TSV`` unset used to spend its retry delays before failing).

Permanent: :class:`PermanentError` (raise it, or a subclass, for a stage's own "no retry can fix this"),
a missing file or folder, a bad config (``ConfigError``, a pydantic ``ValidationError``), an unknown or
uninstalled stage, an import error. Everything else is treated as transient and retried.

No Prefect imports: Ray workers import this module through ``shard_job``.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from fourm_core.config import ConfigError

from .stages import StageNotAvailable


class PermanentError(Exception):
    """A failure that no retry can fix; the flow fails at once and the message says what to change."""


class UnknownShardError(PermanentError, ValueError):
    """A requested shard index that the stage does not have for this dataset."""


PERMANENT: tuple[type[BaseException], ...] = (
    PermanentError, FileNotFoundError, NotADirectoryError, IsADirectoryError, ConfigError, ValidationError,
    StageNotAvailable, ImportError,
)


def is_permanent(exc: BaseException) -> bool:
    """True when retrying cannot help. Ray re-raises a task's exception as an instance of its own type
    (``ray_runtime.run_remote``), so a missing file on a Ray worker is recognised here too."""
    return isinstance(exc, PERMANENT)


def retry_unless_permanent(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed task run unless its exception is permanent.

    Prefect calls it with the failed state, whose data is the exception (results are not persisted here).
    """
    exc = state.result(raise_on_failure=False)
    return not (isinstance(exc, BaseException) and is_permanent(exc))
