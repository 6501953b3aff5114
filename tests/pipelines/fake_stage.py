"""Test-only stages with the same contract as real ones (fourm_core.stage.StageSpec).

``fake`` makes ``numbers`` shards from the dataset config (shard count = ceil(n_samples / shard_size)
of its synthetic source); ``fake_down`` reads them and commits ``doubled`` with lineage inputs. Neither
knows about Prefect or Ray: the flow must run them exactly like the real ingest stage.

``FAKE_STAGE_FAIL_ONCE=<dir>``: the first attempt at each shard listed as an empty file ``<dir>/<shard>``
raises (and removes the file), so a test can see Prefect retry a unit. ``FAKE_STAGE_MISSING=<shard>``: that
shard's unit raises FileNotFoundError (a permanent failure) on every attempt. ``FAKE_STAGE_SLOW=<shard>:<s>``:
that shard's unit takes ``s`` seconds longer (a long unit in flight while others finish).
"""

from __future__ import annotations

import math
import os
import time

import pyarrow as pa

from fourm_core.config import DatasetConfig
from fourm_core.stage import StageSpec
from fourm_core.store import ArtifactStore
from fourm_core.units import SampleError, Unit, UnitOutput, UnitResult, run_unit


def _n(config: DatasetConfig) -> int:
    return sum(getattr(s, "n_samples", 0) for s in config.sources)


def plan(store: ArtifactStore, config: DatasetConfig) -> list[int]:
    return list(range(math.ceil(_n(config) / config.ingest.shard_size)))


def _maybe_fail(shard: int) -> None:
    marker_dir = os.environ.get("FAKE_STAGE_FAIL_ONCE")
    if marker_dir and os.path.exists(os.path.join(marker_dir, str(shard))):
        os.remove(os.path.join(marker_dir, str(shard)))
        raise RuntimeError(f"transient failure on shard {shard}")
    if os.environ.get("FAKE_STAGE_MISSING") == str(shard):
        raise FileNotFoundError(f"input of shard {shard} does not exist")
    slow, _, seconds = os.environ.get("FAKE_STAGE_SLOW", "").partition(":")
    if slow == str(shard):
        time.sleep(float(seconds))


def run(store: ArtifactStore, config: DatasetConfig, shard: int, *, force: bool = False) -> list[UnitResult]:
    size = config.ingest.shard_size
    keys = [f"s{i:05d}" for i in range(shard * size, min((shard + 1) * size, _n(config)))]
    unit = Unit(stage="fake", dataset=config.name, artifacts=["numbers"], shard=shard, code_version="fake/1",
                config={"shard_size": size, "n": _n(config)})

    def compute() -> UnitOutput:
        _maybe_fail(shard)
        table = pa.table({"sample_key": keys, "value": [int(k[1:]) for k in keys],
                          "pid": [os.getpid()] * len(keys)})
        return UnitOutput({"numbers": table}, errors=[SampleError(keys[0], "odd_sample", "for the errors table")])

    return [run_unit(store, unit, compute, force=force)]


def plan_down(store: ArtifactStore, config: DatasetConfig) -> list[int]:
    return store.committed_shards(config.name, "numbers")


def run_down(store: ArtifactStore, config: DatasetConfig, shard: int, *, force: bool = False) -> list[UnitResult]:
    upstream = store.read_manifest(config.name, "numbers", shard)
    assert upstream is not None, f"numbers shard {shard} not committed"
    unit = Unit(stage="fake_down", dataset=config.name, artifacts=["doubled"], shard=shard, code_version="down/1",
                inputs=[upstream.as_input()])

    def compute() -> UnitOutput:
        t = store.read_table(config.name, "numbers", shard)
        return UnitOutput({"doubled": pa.table({"sample_key": t["sample_key"],
                                                "value": [2 * v for v in t["value"].to_pylist()]})})

    return [run_unit(store, unit, compute, force=force)]


STAGE = StageSpec(name="fake", plan_shards=plan, run_shard=run, artifacts=("numbers",), heavy=True, num_cpus=0.5)
DOWN = StageSpec(name="fake_down", plan_shards=plan_down, run_shard=run_down, artifacts=("doubled",), heavy=False)

REGISTRATION = "fake=tests.pipelines.fake_stage:STAGE,fake_down=tests.pipelines.fake_stage:DOWN"

CONFIG_YAML = """\
name: {name}
sources:
  - kind: synthetic
    n_samples: 12
ingest:
  shard_size: 4
stages: [fake, fake_down]
"""
