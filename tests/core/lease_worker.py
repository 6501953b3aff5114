"""A process that runs one unit whose compute never finishes (for the stale-lease kill test).

    python -m tests.core.lease_worker ROOT
"""

from __future__ import annotations

import sys
import time

from fourm_core import ArtifactStore, Unit, UnitOutput, run_unit


def main(root: str) -> None:
    def compute() -> UnitOutput:
        print("computing", flush=True)
        time.sleep(600)
        raise AssertionError("killed before this")

    run_unit(ArtifactStore(root), Unit(stage="w", dataset="ls", artifacts=["a"], shard=3, code_version="w/1"), compute)


if __name__ == "__main__":
    main(sys.argv[1])
