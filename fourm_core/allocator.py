"""Keep freed memory in a worker process's heap instead of returning it to the kernel (glibc).

Why: glibc serves an allocation above its mmap threshold (128 kB at start, raised adaptively up to 32 MB) with a
fresh ``mmap`` and gives it back with ``munmap`` when it is freed, and it trims the top of its heap beyond
another threshold. The next allocation of that size then starts on untouched pages, and each 4 kB page is a
fault the kernel zero-fills: a labeler actor faulted ~3 000 times a 32-image call against ~1 200 for the same
model in a plain loop (docs/labelers.md), and a 224² float32 batch of 32 images is 19 MB, a 512² one 100 MB,
above the adaptive ceiling. Raising both thresholds makes freed blocks stay in the heap for the next call.
Threads other than the main one allocate from glibc's per-thread arenas, whose heaps are at most 64 MB: there a
larger block is still mapped fresh each time (a labeler actor's calls run on its call threads, so this policy
covers their blocks up to 64 MB).

It is a process-wide policy, so it is applied only in processes that do one job for their whole life: the
labeler actors (``pseudolabel.actor_pool``) and the training loader's workers (``train_stage.data``). The cost
is memory: a process's footprint no longer shrinks after a peak (up to ``trim_threshold``, 512 MB by default,
of freed memory stays at the top of each heap).
``FOURM_RETAIN_FREED_MEMORY=0`` turns it off. The labeler actors also keep Hugging Face tokenizers on one
thread (:func:`single_threaded_tokenizers`), the other per-process setting of such a worker.
"""

from __future__ import annotations

import ctypes
import os

# mallopt(3) parameter numbers (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 256 << 20  # allocations below this come from the heap (reused), not a fresh mmap
TRIM_THRESHOLD = 512 << 20  # freed memory at the heap's top kept up to this much
MMAP_CEILING = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit


def retain_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set this process's glibc mmap and trim thresholds (see the module's docstring); True when applied, False
    where the C library is not glibc (macOS, musl), where glibc refused the mmap threshold (it then gets glibc's
    32 MB ceiling) or with ``FOURM_RETAIN_FREED_MEMORY=0``."""
    if os.environ.get("FOURM_RETAIN_FREED_MEMORY", "1") == "0":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library (no ldconfig lookup)
    except (OSError, AttributeError):  # no glibc: its allocator has its own policy
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 when it took the value. Some glibc versions refuse an mmap threshold above the adaptive
    # ceiling (32 MB on 64-bit): the ceiling then, which keeps the blocks below it in the heap, and False.
    full = mallopt(M_MMAP_THRESHOLD, mmap_threshold)
    if not full:
        mallopt(M_MMAP_THRESHOLD, MMAP_CEILING)
    return bool(full and mallopt(M_TRIM_THRESHOLD, trim_threshold))


def single_threaded_tokenizers() -> None:
    """Hugging Face fast tokenizers encode a batch on a thread pool of one thread per core of the node (Rust's
    rayon); in an actor that reserved fewer cores they spin beside the model and the node's other processes (a t5
    actor's two extra threads took ~20 % of a core and 13 000 context switches a second, for captions the model
    thread tokenizes in well under a millisecond). Off in this process, unless ``TOKENIZERS_PARALLELISM`` is set."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
