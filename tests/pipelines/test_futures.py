"""pipelines.futures.wait_any: the dispatcher hears of the first finished unit, not of the last one."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from prefect.futures import PrefectConcurrentFuture

from pipelines.futures import wait_any


def test_returns_when_the_first_unit_finishes_not_the_last():
    release = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        quick = PrefectConcurrentFuture(uuid.uuid4(), pool.submit(lambda: 1))
        slow = PrefectConcurrentFuture(uuid.uuid4(), pool.submit(release.wait, 20))
        t0 = time.monotonic()
        done = wait_any([quick, slow], timeout=20)
        waited = time.monotonic() - t0
        release.set()
    assert done == {quick} and waited < 5


def test_nothing_done_within_the_timeout():
    release = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        slow = PrefectConcurrentFuture(uuid.uuid4(), pool.submit(release.wait, 20))
        assert wait_any([slow], timeout=0.2) == set()
        release.set()
        assert wait_any([slow], timeout=20) == {slow}
