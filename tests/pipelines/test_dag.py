"""Per-shard pipelining rules (pipelines/dag.py) on a simulated executor: no Prefect, no Ray, no store.

Stages mirror the real ones' declarations: ``ingest`` (plans from its sources), ``pseudolabel`` (after ingest,
plans the committed images shards), ``train`` (whole dataset, reads a declared subset), ``tokenize`` (after
all three). A unit "commits" when the simulated clock reaches its end; planning sees only committed units.
"""

from __future__ import annotations

import pytest

from fourm_core import DatasetConfig
from fourm_core.stage import StageSpec
from pipelines.dag import Callbacks, ShardDag
from pipelines.errors import UnknownShardError

CONFIG = DatasetConfig(name="sim", sources=[{"kind": "synthetic"}])
SHARDS = [0, 1, 2, 3]


def _spec(name: str, **kw) -> StageSpec:
    return StageSpec(name=name, plan_shards=lambda store, config: [], run_shard=lambda *a, **k: [], **kw)


INGEST = _spec("ingest")
LABEL = _spec("pseudolabel", after=("ingest",))
TRAIN = _spec("train", after=("ingest", "pseudolabel"), whole_dataset=True, reads_shards=lambda config, shard: [0, 1])
TOKENIZE = _spec("tokenize", after=("ingest", "pseudolabel", "train"))


class Sim:
    """A clock, durations per (stage, shard), committed units, and a log of (start, end, stage, shard)."""

    def __init__(self, durations: dict[tuple[str, int], float] | None = None, fail: set[tuple[str, int]] = frozenset()):
        self.now, self.durations, self.fail = 0.0, durations or {}, fail
        self.committed: set[tuple[str, int]] = set()
        self.log: list[tuple[float, float, str, int]] = []
        self.cached_units: set[tuple[str, int]] = set()

    def plan(self, spec: StageSpec) -> list[int]:
        if spec.name == "ingest":
            return list(SHARDS)
        if spec.name == "train":
            return [0]
        source = {"pseudolabel": "ingest", "tokenize": "pseudolabel"}[spec.name]
        return sorted(s for st, s in self.committed if st == source)

    def cached(self, spec: StageSpec, shards: list[int]):
        hit = [s for s in shards if (spec.name, s) in self.cached_units]
        return ([{"unit": f"{spec.name}/{s}", "stage": spec.name, "shard": s, "status": "cached", "rows": 1,
                  "artifacts": [spec.name]} for s in hit], [s for s in shards if s not in hit])

    def submit(self, spec: StageSpec, shard: int):
        end = self.now + self.durations.get((spec.name, shard), 1.0)
        fut = (end, spec.name, shard)
        self.log.append((self.now, end, spec.name, shard))
        return fut

    def wait(self, futures, timeout):
        end = min(f[0] for f in futures)
        self.now = end
        done = {f for f in futures if f[0] == end}
        for _, stage, shard in done:
            if (stage, shard) not in self.fail:
                self.committed.add((stage, shard))
        return done

    def result(self, fut):
        _, stage, shard = fut
        if (stage, shard) in self.fail:
            raise RuntimeError(f"{stage} shard {shard} failed")
        return [{"unit": f"{stage}/{shard}", "stage": stage, "shard": shard, "status": "done", "rows": 1,
                 "artifacts": [stage]}]

    def callbacks(self) -> Callbacks:
        return Callbacks(plan=self.plan, peek=self.plan, cached=self.cached, submit=self.submit, wait=self.wait,
                         result=self.result, log=lambda line: None)

    def start(self, stage: str, shard: int) -> float:
        return next(t0 for t0, _, st, s in self.log if (st, s) == (stage, shard))


def _run(sim: Sim, stages=(INGEST, LABEL, TRAIN, TOKENIZE), **kw) -> ShardDag:
    dag = ShardDag(list(stages), CONFIG, **kw)
    dag.run(sim.callbacks())
    return dag


def test_a_shard_moves_on_as_soon_as_what_it_reads_is_committed():
    # ingest shard 3 is slow: shards 0-2 are labelled meanwhile; the tokenizers train on the subset [0, 1]
    sim = Sim({("ingest", 3): 10.0})
    dag = _run(sim)
    assert sim.start("pseudolabel", 0) == 1.0 and sim.start("pseudolabel", 3) == 10.0
    assert sim.start("train", 0) == 2.0  # pseudolabel 0 and 1 done; not waiting for shard 3
    assert sim.start("tokenize", 0) == 3.0  # after the tokenizers, long before ingest 3 ends
    assert sim.start("tokenize", 3) == 11.0
    assert {s["status"] for s in dag.summaries} == {"done"} and len(dag.summaries) == 4 + 4 + 1 + 4
    assert [(u["stage"], u["shard"]) for u in dag.summaries][:5] == [("ingest", s) for s in SHARDS] + [("pseudolabel", 0)]
    assert dag.plans == {"ingest": SHARDS, "pseudolabel": SHARDS, "train": [0], "tokenize": SHARDS}


def test_without_pipelining_every_stage_waits_for_the_previous_one():
    sim = Sim({("ingest", 3): 10.0})
    _run(sim, pipelined=False)
    assert min(sim.start("pseudolabel", s) for s in SHARDS) == 10.0
    assert sim.start("train", 0) == 11.0 and min(sim.start("tokenize", s) for s in SHARDS) == 12.0


def test_a_failure_blocks_only_what_reads_it():
    sim = Sim(fail={("ingest", 2)})
    dag = _run(sim)
    started = {(st, s) for _, _, st, s in sim.log}
    assert ("pseudolabel", 2) not in started and ("tokenize", 2) not in started
    assert {("pseudolabel", s) for s in (0, 1, 3)} <= started and {("tokenize", s) for s in (0, 1, 3)} <= started
    assert dag.blocked == {"pseudolabel": [2], "tokenize": [2]}
    failed = [u for u in dag.summaries if u["status"] == "failed"]
    assert [(u["stage"], u["shard"]) for u in failed] == [("ingest", 2)]

    sim = Sim(fail={("pseudolabel", 1)})  # in the tokenizers' subset: every tokenize shard reads them
    dag = _run(sim)
    assert not [1 for _, _, st, _ in sim.log if st in ("train", "tokenize")]
    assert dag.blocked == {"train": [0], "tokenize": SHARDS}


def test_shards_and_stages_selection():
    sim = Sim()
    _run(sim, stages=(INGEST, LABEL), shards=[1, 3])
    assert sorted((st, s) for _, _, st, s in sim.log) == [("ingest", 1), ("ingest", 3), ("pseudolabel", 1),
                                                          ("pseudolabel", 3)]
    sim = Sim()
    sim.committed = {("ingest", s) for s in SHARDS}
    dag = _run(sim, stages=(LABEL,))  # a later stage alone plans on what is committed
    assert sorted(s for _, _, _, s in sim.log) == SHARDS and dag.not_run() == []
    with pytest.raises(UnknownShardError, match=r"stage 'ingest' has no shard\(s\) \[9\]"):
        _run(Sim(), shards=[9])


def test_cached_units_are_not_dispatched_and_a_cached_run_plans_each_stage_once():
    sim = Sim()
    sim.committed = {(st, s) for st in ("ingest", "pseudolabel") for s in SHARDS}
    sim.cached_units = {(st, s) for st in ("ingest", "pseudolabel", "train", "tokenize") for s in SHARDS}
    dag = _run(sim)
    assert sim.log == [] and {u["status"] for u in dag.summaries} == {"cached"} and len(dag.summaries) == 13


def test_releases_each_stage_once_when_it_has_no_unit_left():
    sim = Sim({("ingest", 3): 10.0})
    released: list[tuple[str, float]] = []
    cb = sim.callbacks()
    cb.release = lambda spec: released.append((spec.name, sim.now))
    ShardDag([INGEST, LABEL, TRAIN, TOKENIZE], CONFIG).run(cb)
    assert [n for n, _ in released] == ["ingest", "pseudolabel", "train", "tokenize"]
    assert dict(released)["pseudolabel"] == 11.0  # its last shard ran after ingest's slow one


def test_with_bounded_slots_a_shard_flows_through_before_the_next_is_ingested():
    sim = Sim()
    cb = sim.callbacks()
    cb.max_in_flight = 2
    ShardDag([INGEST, LABEL], CONFIG).run(cb)
    order = [(st, s) for _, _, st, s in sorted(sim.log, key=lambda e: (e[0], e[2] != "pseudolabel"))]
    assert order[:4] == [("ingest", 0), ("ingest", 1), ("pseudolabel", 0), ("pseudolabel", 1)]
    assert max(sum(1 for t0, t1, _, _ in sim.log if t0 <= t < t1) for t in (0.5, 1.5, 2.5, 3.5)) == 2
