"""Pause CPython's cyclic garbage collector around the control plane's bulk reads.

Why: ``status`` and the orchestrator's cached check build a few objects per committed unit (index entries,
units, cache keys, summaries: ~10^6 container objects at 300 000 units), all acyclic and freed by reference
counting. While they are alive, every full collection the allocations trigger re-scans all of them, which
cost 40 % of the cached check's CPU at 3 000 shards x 30 artifacts (bench/bench_control_plane.py) and grows
faster than the number of units. Nothing in these reads makes reference cycles that need the collector.

When the pause ends, what it allocated and kept (a re-run's summaries, an index's entries) would all be in the
youngest generation, and the first allocation after ``gc.enable()`` would scan every one of them once (~0.1 s per
10^6 objects). They are long-lived by then, so they are moved to the oldest generation unscanned
(``gc.freeze(); gc.unfreeze()``), where a collection that had run during the pause would have put them after two
scans; skipped while anything else in the process keeps objects frozen (``gc.get_freeze_count()``), whose freeze
this must not undo.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0
_we_disabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Within the block the cyclic collector does not run (nested and concurrent blocks share one pause; the
    collector comes back when the last one ends, and only if it was enabled when the first one began)."""
    global _depth, _we_disabled
    with _lock:
        if _depth == 0 and gc.isenabled():
            gc.disable()
            _we_disabled = True
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _we_disabled:
                _we_disabled = False
                if gc.get_freeze_count() == 0:
                    gc.freeze()
                    gc.unfreeze()
                gc.enable()
