"""The worker-process allocator policy (fourm_core.allocator): freed blocks are reused without page faults, the
switch turns it off, and tokenizers stay on one thread unless the user said otherwise. Each check runs in a fresh
interpreter, since the policy is process-wide."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROBE = """
import json, sys, threading
from fourm_core.allocator import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "apply" else None
from tests.core.test_allocator import reallocation_faults
in_thread = {}
t = threading.Thread(target=lambda: in_thread.setdefault("faults", reallocation_faults(40)))  # an actor's call thread
t.start()
t.join()
print(json.dumps({"applied": applied, "faults": reallocation_faults(40), "thread_faults": in_thread["faults"]}))
"""


def reallocation_faults(megabytes: int, times: int = 4) -> float:
    """Page faults of the calling thread per allocation of ``megabytes`` MB (written to, as a batch is), after the
    first one was freed (Linux: ``RUSAGE_THREAD``)."""
    import resource

    import numpy as np

    n = megabytes << 20
    a = np.ones(n, np.uint8)
    del a
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt  # this thread's: not Ray's or torch's threads
    for _ in range(times):
        a = np.ones(n, np.uint8)
        del a
    return (resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before) / times


def _probe(mode: str, **env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}, cwd=REPO)
    return json.loads(out.stdout)


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator policy")
def test_freed_batches_are_reused_without_page_faults():
    plain = _probe("plain", FOURM_RETAIN_FREED_MEMORY="1")
    kept = _probe("apply", FOURM_RETAIN_FREED_MEMORY="1")
    assert kept["applied"] is True
    # a 40 MB block is above glibc's adaptive mmap ceiling (32 MB): by default every allocation maps fresh pages
    # (4 kB pages, or 2 MB ones where numpy asks for transparent huge pages: >= 20 faults, each zero-filled)
    assert plain["faults"] >= 10 and plain["thread_faults"] >= 10, plain
    assert kept["faults"] <= 1 and kept["thread_faults"] <= 1, kept


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator policy")
def test_the_switch_turns_the_policy_off():
    off = _probe("apply", FOURM_RETAIN_FREED_MEMORY="0")
    assert off["applied"] is False
    assert off["faults"] >= 10, off


@pytest.mark.parametrize("preset", [None, "true"])
def test_tokenizers_run_on_one_thread_unless_configured(preset):
    env = {k: v for k, v in os.environ.items() if k != "TOKENIZERS_PARALLELISM"}
    if preset is not None:
        env["TOKENIZERS_PARALLELISM"] = preset
    code = "import os; from fourm_core.allocator import single_threaded_tokenizers as s; s(); " \
           "print(os.environ['TOKENIZERS_PARALLELISM'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=REPO)
    assert out.stdout.strip() == (preset or "false")
