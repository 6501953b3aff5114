"""The largest per-device batch that fits: doubling, then bisection, over a "does it fit" probe.

Used by ``bench/bench_train_step.py --max-batch`` on a GPU, where a probe is one training step that
either completes or raises ``torch.OutOfMemoryError``.
"""

from __future__ import annotations

from typing import Callable

import torch


def largest_fitting(fits: Callable[[int], bool], start: int = 1, limit: int = 1 << 16) -> int:
    """Largest n in [start, limit] with fits(n), assuming fits is monotone (true up to some n, then false).

    Returns 0 if even ``start`` does not fit. Probes O(log n) sizes: start, 2 start, 4 start, ... until the
    first failure (or ``limit``), then bisects between the last success and that failure."""
    if start < 1 or limit < start:
        raise ValueError(f"need 1 <= start <= limit, got start={start}, limit={limit}")
    if not fits(start):
        return 0
    good, bad = start, None
    while bad is None:
        nxt = min(good * 2, limit)
        if nxt == good:
            return good
        if fits(nxt):
            good = nxt
        else:
            bad = nxt
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good


def fits_in_memory(step: Callable[[int], None]) -> Callable[[int], bool]:
    """Wrap ``step(batch_size)`` into a probe: False on a CUDA out-of-memory error, memory freed either way."""

    def probe(n: int) -> bool:
        try:
            step(n)
            return True
        except torch.OutOfMemoryError:
            return False
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    return probe
