"""Per-shard pipelining: a small dependency-driven dispatcher over (stage, shard) units (no Prefect, no Ray).

A unit of a stage waits only for what it reads (``StageSpec.after``, ``reads_shards``, ``whole_dataset``):
shard 3's pseudolabel starts as soon as shard 3's images are committed, not when every shard is ingested;
``tokenize`` of a shard also waits for the trained tokenizers (a whole-dataset unit), which wait only for the
pseudolabel shards of their declared subset. A failed unit stops only the units that read it (``blocked``).

Planning: a stage whose inputs are all complete plans once (``plan``: its final shard list, checked against
``shards=[...]``, then the orchestrator's cached check, as a whole). Before that, its candidate shards are
those its input stages have or may have, and a candidate whose inputs are committed runs if the stage's
current plan (``peek``) already lists it; what the final plan adds (e.g. shards committed by an earlier run)
runs then, what it drops is dropped. ``pipelined=False`` makes every unit wait for every unit of every earlier
stage: the old stage-by-stage barrier, kept for comparison (bench/bench_pipelining.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from fourm_core.config import DatasetConfig
from fourm_core.stage import StageSpec

from pipelines.errors import UnknownShardError
from pipelines.report import PROGRESS_EVERY_S, Progress

OK, FAILED, BLOCKED = "ok", "failed", "blocked"


@dataclass
class Callbacks:
    """What the orchestrator provides. ``submit`` returns a future; ``wait(futures, timeout)`` returns the finished
    ones as soon as at least one is (not when all are: a shard's next stage would wait for the slowest unit in
    flight), or after ``timeout`` seconds."""

    plan: Callable[[StageSpec], list[int]]  # the stage's final plan (may raise: the run fails)
    peek: Callable[[StageSpec], list[int]]  # the stage's plan as of now (cheap; not final)
    cached: Callable[[StageSpec, list[int]], tuple[list[dict[str, Any]], list[int]]]  # (cached summaries, to run)
    submit: Callable[[StageSpec, int], Any]
    wait: Callable[[list[Any], float], set[Any]]
    result: Callable[[Any], list[dict[str, Any]]]  # a finished future's unit summaries; raises if it failed
    log: Callable[[str], None] = print
    refresh: Callable[[], None] = lambda: None  # before each round of checks: see what was committed since
    max_in_flight: int | None = None  # units submitted and not finished at most (None: no bound)
    release: Callable[[StageSpec], None] = lambda spec: None  # a stage has no unit left to run


@dataclass
class _Stage:
    spec: StageSpec
    inputs: list[str]  # stages of this run it reads
    plan: set[int] | None = None  # final plan (selected shards), once its inputs are complete
    peeked: set[int] = field(default_factory=set)
    peek_stale: bool = True
    state: dict[int, str] = field(default_factory=dict)  # shard -> ok / failed / blocked (resolved units)
    running: set[int] = field(default_factory=set)
    progress: Progress | None = None
    released: bool = False
    ready: set[int] = field(default_factory=set)  # inputs committed, not cached, waiting for room to run
    bad: int = 0  # units failed or blocked
    # Shards to look at in the next round (None: all candidates): what a resolution or a plan could have made
    # ready. Keeps a round's cost proportional to what changed, not to the dataset's shard count.
    dirty: set[int] | None = None

    def complete(self) -> bool:
        # after the final plan every resolved shard is in it (candidates are the plan)
        return self.plan is not None and not self.running and not self.ready and len(self.state) >= len(self.plan)


class ShardDag:
    """Dispatches the units of ``specs`` (in run order) as their inputs become ready."""

    def __init__(self, specs: list[StageSpec], config: DatasetConfig, shards: list[int] | None = None,
                 pipelined: bool = True):
        self.config, self.shards, self.pipelined = config, (None if shards is None else set(shards)), pipelined
        self.order = [s.name for s in specs]
        self.stages: dict[str, _Stage] = {}
        for i, spec in enumerate(specs):
            earlier = self.order[:i]
            reads = earlier if spec.after is None or not pipelined else [n for n in earlier if n in spec.after]
            self.stages[spec.name] = _Stage(spec, reads)
        self._units: list[tuple[int, int, dict[str, Any]]] = []  # (stage position, shard, unit summary)
        self.plans: dict[str, list[int]] = {}  # stage -> its full plan (before the shards filter), for the record
        self.blocked: dict[str, list[int]] = {}
        self._cands: dict[str, set[int]] = {}  # cache; cleared when a plan or a peek changes
        self._readers = {n: [m for m in self.order if n in self.stages[m].inputs] for n in self.order}
        # stage -> [first unit submitted, last unit finished] (wall-clock time.time()): where a run's time went
        self.spans: dict[str, list[float]] = {}

    @property
    def summaries(self) -> list[dict[str, Any]]:
        """Every unit's summary (done, cached, failed), in stage order, then shard order."""
        return [u for _, _, u in sorted(self._units, key=lambda t: (t[0], t[1]))]

    def _record(self, st: _Stage, units: list[dict[str, Any]]) -> None:
        pos = self.order.index(st.spec.name)
        self._units.extend((pos, -1 if u["shard"] is None else u["shard"], u) for u in units)

    # ------------------------------------------------------------------------------------------ queries

    def _shards_from_plan(self, st: _Stage) -> bool:
        """Candidates come from the stage's own plan as of now (a whole-dataset stage; no per-shard inputs)."""
        return st.spec.whole_dataset or all(self.stages[i].spec.whole_dataset for i in st.inputs)

    def candidates(self, st: _Stage) -> set[int]:
        """Shards the stage has or may have: its final plan, else what its per-shard inputs have or may have."""
        name = st.spec.name
        if name not in self._cands:
            self._cands[name] = self._candidates(st)
        return self._cands[name]

    def _candidates(self, st: _Stage) -> set[int]:
        if st.plan is not None:
            return st.plan
        if self._shards_from_plan(st):
            return {s for s in st.peeked if self.shards is None or s in self.shards}
        out: set[int] = set()
        for i in st.inputs:
            if not self.stages[i].spec.whole_dataset:
                out |= self.candidates(self.stages[i])
        return {s for s in out if self.shards is None or s in self.shards}

    def _input_state(self, st: _Stage, shard: int) -> str | None:
        """OK when every unit ``shard`` reads is resolved ok, FAILED when one failed or was blocked, else None."""
        for name in st.inputs:
            inp = self.stages[name]
            whole = inp.spec.whole_dataset or not self.pipelined
            needed = None if whole else st.spec.shards_read(self.config, shard)
            if needed is None:  # every unit of the input stage
                if inp.bad:
                    return FAILED
                if not (inp.complete() or (self.pipelined and inp.spec.whole_dataset and self._settled(inp))):
                    return None
                continue
            for m in needed:
                if m in inp.state:
                    if inp.state[m] != OK:
                        return FAILED
                elif inp.plan is None or m in inp.plan:  # not resolved yet (or its stage not planned yet)
                    return None
        return OK

    def _settled(self, st: _Stage) -> bool:
        """A whole-dataset stage whose units (as its plan lists them now) all committed, before its final plan:
        e.g. tokenizers trained on their declared subset while other shards are still being labelled."""
        units = self.candidates(st)
        return bool(units) and not st.running and all(st.state.get(s) == OK for s in units)

    def _inputs_complete(self, st: _Stage) -> bool:
        return all(self.stages[i].complete() for i in st.inputs)

    def done(self) -> bool:
        return all(st.complete() for st in self.stages.values())

    # --------------------------------------------------------------------------------------------- run

    def run(self, cb: Callbacks) -> None:
        """Dispatch until every stage is complete. An exception from planning stops new work; the units in
        flight finish (their summaries are kept) and the exception is raised."""
        futures: dict[Any, tuple[_Stage, int]] = {}
        error: BaseException | None = None
        last_log = time.monotonic()
        try:
            while True:
                if error is None:
                    try:
                        self._advance(cb, futures)
                    except Exception as exc:
                        error = exc
                if not futures:
                    break
                finished = cb.wait(list(futures), PROGRESS_EVERY_S)
                for fut in finished:
                    st, shard = futures.pop(fut)
                    self._finish(cb, st, shard, fut)
                for st in self.stages.values():
                    st.peek_stale = st.peek_stale or bool(finished)
                if time.monotonic() - last_log >= PROGRESS_EVERY_S or finished:
                    self._log_progress(cb)
                    last_log = time.monotonic()
        finally:
            for st in self.stages.values():
                if st.progress is not None:
                    st.progress.close()
                if not st.released:
                    cb.release(st.spec)
        if error is not None:
            raise error
        if not self.done():  # nothing in flight and nothing ready: a bug in the dependency rules
            stuck = {n: sorted(self.candidates(st) - set(st.state)) for n, st in self.stages.items() if not st.complete()}
            raise RuntimeError(f"build-dataset dispatcher stopped with units left and nothing ready: {stuck}")

    def _advance(self, cb: Callbacks, futures: dict[Any, tuple[_Stage, int]]) -> None:
        """Plan what can be planned, block what cannot run, submit what is ready; repeat until nothing changes
        (a stage finishing entirely from cache can make the next one plannable at once)."""
        cb.refresh()
        changed = True
        while changed:
            changed = False
            for name in self.order:
                st = self.stages[name]
                if st.plan is None and self._inputs_complete(st):
                    self._plan(cb, st)
                    changed = True
                elif st.plan is None and st.peek_stale and self._shards_from_plan(st):
                    self._set_peeked(st, cb.peek(st.spec))
                cands = self.candidates(st)
                look = cands if st.dirty is None else st.dirty & cands
                st.dirty = set()
                for shard in sorted(s for s in look if s not in st.state and s not in st.running and s not in st.ready):
                    ready = self._input_state(st, shard)
                    if ready == FAILED:
                        self._block(st, shard)
                        changed = True
                    elif ready == OK and self._planned(cb, st, shard):
                        summaries, to_run = cb.cached(st.spec, [shard]) if st.plan is None else ([], [shard])
                        if summaries and not to_run:
                            self._record(st, summaries)
                            self._resolve(st, shard, OK)
                            self._progress(st).update(summaries)
                        else:
                            st.ready.add(shard)
                        changed = True
                if st.complete() and not st.released:
                    st.released = True
                    cb.release(st.spec)
        self._submit(cb, futures)

    def _submit(self, cb: Callbacks, futures: dict[Any, tuple[_Stage, int]]) -> None:
        """Submit ready units up to ``max_in_flight``, later stages first, then lower shards: a shard flows
        through the stages instead of queueing behind every shard of an earlier stage (the task runner's
        queue is first in, first out)."""
        room = (cb.max_in_flight or 1 << 62) - len(futures)
        for st in reversed([self.stages[n] for n in self.order]):
            for shard in sorted(st.ready)[:max(room, 0)]:
                st.ready.discard(shard)
                self.spans.setdefault(st.spec.name, [time.time(), time.time()])
                futures[cb.submit(st.spec, shard)] = (st, shard)
                st.running.add(shard)
                room -= 1

    def _planned(self, cb: Callbacks, st: _Stage, shard: int) -> bool:
        """Whether ``shard`` is in the stage's plan: the final one, or (before it) the plan as of now."""
        if st.plan is not None:
            return shard in st.plan
        if shard not in st.peeked and st.peek_stale:
            self._set_peeked(st, cb.peek(st.spec))
        return shard in st.peeked

    def _set_peeked(self, st: _Stage, shards: list[int]) -> None:
        new = set(shards)
        st.peek_stale = False
        if new != st.peeked:
            st.peeked, st.dirty = new, None
            self._cands.clear()

    def _resolve(self, st: _Stage, shard: int, state: str) -> None:
        """A unit is done, cached, failed or blocked: mark what may read it for the next round."""
        st.state[shard] = state
        st.bad += state != OK
        for name in self._readers[st.spec.name]:
            reader = self.stages[name]
            if reader.dirty is None:
                continue
            if st.spec.whole_dataset or not self.pipelined or reader.spec.reads_shards is not None:
                reader.dirty = None
            else:
                reader.dirty.add(shard)

    def _block(self, st: _Stage, shard: int) -> None:
        self._resolve(st, shard, BLOCKED)
        self.blocked.setdefault(st.spec.name, []).append(shard)

    def _plan(self, cb: Callbacks, st: _Stage) -> None:
        # Candidates whose input failed are blocked (and reported) even if the final plan no longer lists them.
        for shard in self.candidates(st) - set(st.state) - st.running:
            if self._input_state(st, shard) == FAILED:
                self._block(st, shard)
        planned = list(cb.plan(st.spec))
        self.plans[st.spec.name] = planned
        if self.shards is not None and (unknown := sorted(self.shards - set(planned))):
            raise UnknownShardError(
                f"stage {st.spec.name!r} has no shard(s) {unknown} for dataset {self.config.name!r}; planned shards: "
                f"{planned[:20]}{' ...' if len(planned) > 20 else ''}")
        selected = [s for s in planned if self.shards is None or s in self.shards]
        # what already ran or was blocked before the final plan stays part of it
        st.plan = set(selected) | set(st.state) | st.running
        self._cands.clear()
        st.dirty = None
        for name in self._readers[st.spec.name]:
            self.stages[name].dirty = None
        cb.log(f"stage {st.spec.name}: {len(selected)} of {len(planned)} shards selected")
        # Shards not yet resolved whose inputs are ready: one cached check for all of them (index snapshot reads).
        todo = [s for s in selected if s not in st.state and s not in st.running and self._input_state(st, s) == OK]
        cached, _ = cb.cached(st.spec, todo) if todo else ([], [])
        if cached:
            self._record(st, cached)
            by_shard: dict[int, list[dict[str, Any]]] = {}
            for s in cached:
                by_shard.setdefault(s["shard"], []).append(s)
            for shard, units in by_shard.items():
                self._resolve(st, shard, OK)
                self._progress(st).update(units)
            cb.log(f"stage {st.spec.name}: {len(by_shard)} shard(s) already committed (cached)")
        self._progress(st).total = len(st.plan)

    def _finish(self, cb: Callbacks, st: _Stage, shard: int, fut: Any) -> None:
        st.running.discard(shard)
        self.spans[st.spec.name][1] = time.time()
        try:
            units = cb.result(fut)
            self._resolve(st, shard, OK)
        except Exception as exc:  # retries exhausted: what reads this unit is blocked; the rest goes on
            self._resolve(st, shard, FAILED)
            units = [{"unit": f"{self.config.name}/{st.spec.name}/shard-{shard:05d}", "stage": st.spec.name,
                      "artifacts": list(st.spec.dataset_artifacts(self.config)), "shard": shard, "status": "failed",
                      "rows": 0, "errors": 0, "uris": [], "error": f"{type(exc).__name__}: {exc}"}]
        self._record(st, units)
        self._progress(st).update(units)

    def _progress(self, st: _Stage) -> Progress:
        if st.progress is None:
            st.progress = Progress(st.spec.name, len(self.candidates(st)))
        return st.progress

    def _log_progress(self, cb: Callbacks) -> None:
        for st in self.stages.values():
            if st.progress is not None and (st.running or not st.complete()):
                cb.log(st.progress.line())

    def not_run(self) -> list[str]:
        """Stages never planned (an earlier failure or a planning error stopped the run first)."""
        return [n for n in self.order if self.stages[n].plan is None]
