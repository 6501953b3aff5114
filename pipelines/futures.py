"""Waiting for the *first* of the in-flight units, which ``prefect.futures.wait`` does not do.

``prefect.futures.wait(futures, timeout)`` returns when every future is done or the timeout has passed
(``concurrent.futures``' ALL_COMPLETED). The build-dataset dispatcher (pipelines/dag.py) must hear of each unit
as it finishes, or a shard's next stage waits for the slowest unit in flight (up to the progress interval):
with it, per-shard pipelining degenerated into rounds that each waited for everything submitted, and measured
slower than the stage-by-stage barrier.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

from prefect.futures import wait


def wait_any(futures: list[Any], timeout: float) -> set[Any]:
    """The futures that are done once at least one is (or once ``timeout`` seconds have passed: maybe none).

    Futures of Prefect's thread-pool task runner wrap a ``concurrent.futures.Future``: those are waited on with
    FIRST_COMPLETED. Any other kind falls back to ``prefect.futures.wait`` (all of them, or the timeout).
    """
    wrapped = {getattr(f, "wrapped_future", None): f for f in futures}
    if all(isinstance(w, concurrent.futures.Future) for w in wrapped):
        done, _ = concurrent.futures.wait(list(wrapped), timeout=timeout,
                                          return_when=concurrent.futures.FIRST_COMPLETED)
        return {wrapped[w] for w in done}
    return set(wait(futures, timeout=timeout).done)
