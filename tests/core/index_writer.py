"""A process that commits (and fails) units of a two-artifact stage forever, for the index kill tests.

    python -m tests.core.index_writer ROOT [STORAGE_OPTIONS_JSON]

Every iteration re-commits one of 6 shards with new content and a new cache key (so manifests, data and
journal marks change all the time); every fifth iteration the unit fails instead (a failure record).
"""

from __future__ import annotations

import itertools
import json
import sys

import pyarrow as pa

from fourm_core import ArtifactStore, Unit, UnitOutput, run_unit

DATASET, ARTIFACTS, SHARDS = "ix", ["a", "b"], 6


def main(root: str, options: str | None) -> None:
    store = ArtifactStore(root, json.loads(options) if options else None)
    for i in itertools.count():
        shard = i % SHARDS
        unit = Unit(stage="w", dataset=DATASET, artifacts=ARTIFACTS, shard=shard, code_version="w/1", config={"i": i})

        def compute(i: int = i) -> UnitOutput:
            if i % 5 == 4:
                raise RuntimeError(f"planned failure {i}")
            keys = [f"k{j}" for j in range(1 + i % 7)]
            return UnitOutput({a: pa.table({"sample_key": keys, "i": [i] * len(keys)}) for a in ARTIFACTS})

        run_unit(store, unit, compute, force=True, raise_on_failure=False)
        print(i, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
