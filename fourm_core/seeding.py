"""Seeded use of torch's global RNG, safe when several threads build models at once.

Random-weight (`tiny`) models must come out bit-identical in every process: their weights digest is
part of cache keys. Model constructors and `torch.distributions` draw from the process-wide RNG, and
Prefect runs tasks in threads, so two shards building the same tiny model concurrently would interleave
their draws. One lock serialises every seeded section; `fork_rng` leaves the caller's RNG state alone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_GLOBAL_RNG_LOCK = threading.RLock()


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run the block with torch's CPU RNG seeded to ``seed`` (None: unseeded), holding the process lock."""
    import torch

    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        yield
