"""Labeler actor pools that outlive a shard: each model labeler loads its weights once per run, not per shard.

Starting a Ray actor for a model labeler costs a new process, the torch / transformers imports and the
weight load: 10-30 s per labeler on a CPU box, more than labelling a 1 000-image shard takes on a GPU. The
runner therefore leases its actors from :data:`POOLS`, a per-process registry keyed by the labeler's identity
(name, settings, the labels available to it, plugins): the first shard of a run starts the pool, every later
shard of that run (and the shards running concurrently in other threads) sends its batches to the same actors.

Lifetime: a pool lives until :func:`release_pools` (the build-dataset flow calls it through the stage's
``release`` hook once no pseudolabel shard of the run is left), until it is evicted to make room for another
pool (least recently used first, never while a shard is using it), or until the Ray session that owns it ends.

Resources: a pool's actors hold their CPU reservation for as long as they live, while the run's other work
(decode tasks, model-free labeler tasks, other stages' shard tasks when stages are pipelined) needs CPUs too.
All pools together reserve at most ``max(CPUs - 1, CPUs / 2)`` of the cluster, scaled down in proportion when
the declared per-actor CPUs add up to more (torch keeps its declared thread count; the reservation is a
scheduling hint). GPU fractions are reserved as declared.

Crash safety is unchanged: actors only compute; the stage commits each unit through the commit protocol after
its shard's pass. A SIGKILLed actor is restarted by Ray and its in-flight batch retried (``max_task_retries``);
a pool whose actor is gone for good is dropped, and the shard's retry starts a new one.
"""

from __future__ import annotations

import itertools
import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from fourm_core.allocator import retain_freed_memory, single_threaded_tokenizers

from .runner import LabelerRun, from_wire, label_range, to_wire
from .spec import Labeler

# Restart a dead actor whenever it dies (a pool can serve thousands of shards), but retry one batch only a few
# times: a batch that kills its actor every time fails its shard instead of looping forever.
MAX_TASK_RETRIES = 3
MIN_CPU_RESERVATION = 0.01


# Calls an actor runs at once: one labels (holding the model) while the next unpacks its rows and decodes its
# first batch, so that this per-call work (~4 ms of JPEG decode for a 32-image call of a batch-8 labeler, plus
# Ray's argument handling) is not on the model's path between calls.
CALLS_IN_ACTOR = 2


class _LabelerActor:
    """One labeler in its own process: built and set up (model loaded) once, then labels row ranges, one call
    at a time in the model (``CALLS_IN_ACTOR`` calls in the actor)."""

    def __init__(self, run: LabelerRun):
        # a process with one job for its life: freed batches stay in its heap for the next call (no page faults)
        self.retains_freed_memory = retain_freed_memory()
        single_threaded_tokenizers()
        self.labeler = run.build()
        self.labeler.setup()
        self.model = threading.Lock()

    def label(self, offset: int, length: int, drop_pixels: bool, decode: bool | None, *tables):
        """Rows of the previous step's chunks (Arrow IPC bytes, :func:`~pseudolabel.runner.to_wire`), labelled,
        as Arrow IPC bytes again."""
        return to_wire(label_range(self.labeler, offset, length, drop_pixels, [from_wire(t) for t in tables],
                                   decode, self.model))


def run_key(run: LabelerRun) -> str:
    """A labeler's identity for pooling: two runs with the same key can share actors."""
    return json.dumps([run.name, run.settings, sorted(run.available), list(run.registry_plugins)], sort_keys=True,
                      default=str)


@dataclass
class LabelerPool:
    """The actors of one labeler identity; batches go round-robin (Ray queues calls per actor)."""

    key: str
    name: str
    actors: list[Any]
    cpus_each: float
    users: int = 0
    last_used: int = 0
    _next: Iterator[int] = field(default_factory=itertools.count)

    @property
    def reserved_cpus(self) -> float:
        return self.cpus_each * len(self.actors)

    def submit(self, offset: int, length: int, drop_pixels: bool, refs: list[Any], decode: bool | None = None):
        actor = self.actors[next(self._next) % len(self.actors)]
        return actor.label.options(name=f"pseudolabel/{self.name}").remote(offset, length, drop_pixels, decode,
                                                                           *refs)

    def kill(self) -> None:
        import ray

        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already gone (its node died, or the Ray session ended)
                pass


@dataclass(frozen=True)
class PoolRequest:
    """What a shard's pass needs from one model labeler: its run, its declaration and its GPU fraction."""

    run: LabelerRun
    labeler: Labeler
    num_gpus: float

    @property
    def cpus_wanted(self) -> float:
        return float(self.labeler.settings.num_cpus or self.labeler.resources.num_cpus)


class PoolRegistry:
    """Per-process labeler pools of the current Ray session (thread-safe: shards run in threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: dict[str, LabelerPool] = {}
        self._session: str | None = None
        self._clock = itertools.count(1)

    @staticmethod
    def cpu_budget(cluster_cpus: float) -> float:
        """CPUs all pools together may reserve: the rest stays free for tasks, so nothing waits forever."""
        return max(cluster_cpus - 1.0, cluster_cpus / 2.0)

    def reserved_cpus(self) -> float:
        with self._lock:
            return sum(p.reserved_cpus for p in self._pools.values())

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._pools)

    @contextmanager
    def lease(self, requests: list[PoolRequest], cluster_cpus: float) -> Iterator[list[LabelerPool]]:
        """The pools for ``requests`` (started when missing), held in use (not evictable) within the block.

        If the block fails because an actor is gone for good, the leased pools are dropped so that the next
        lease (the shard's retry) starts fresh actors.
        """
        import ray

        pools = self._acquire(requests, cluster_cpus)
        try:
            yield pools
        except ray.exceptions.RayActorError:
            self._drop(pools)
            raise
        finally:
            with self._lock:
                for p in pools:
                    p.users -= 1

    def _acquire(self, requests: list[PoolRequest], cluster_cpus: float) -> list[LabelerPool]:
        import ray

        with self._lock:
            self._check_session(ray)
            keys = [run_key(r.run) for r in requests]
            missing = [(k, r) for k, r in zip(keys, requests) if k not in self._pools]
            if missing:
                budget = self.cpu_budget(cluster_cpus)
                wanted = sum(r.cpus_wanted * r.labeler.settings.concurrency for _, r in missing)
                self._evict(budget - wanted, keep=set(keys))
                free = max(budget - sum(p.reserved_cpus for p in self._pools.values()), 0.0)
                scale = min(1.0, free / wanted) if wanted else 1.0
                for k, r in missing:
                    self._pools[k] = self._start(k, r, max(r.cpus_wanted * scale, MIN_CPU_RESERVATION))
            pools = [self._pools[k] for k in keys]
            now = next(self._clock)
            for p in pools:
                p.users += 1
                p.last_used = now
            return pools

    def _check_session(self, ray) -> None:
        """Handles from an earlier Ray session are dead: forget them (their actors died with that session)."""
        session = ray.get_runtime_context().get_job_id()
        if session != self._session:
            self._pools.clear()
            self._session = session

    def _evict(self, target_reserved: float, keep: set[str]) -> None:
        """Kill idle pools, least recently used first, until at most ``target_reserved`` CPUs are reserved."""
        idle = sorted((p for k, p in self._pools.items() if p.users == 0 and k not in keep), key=lambda p: p.last_used)
        reserved = sum(p.reserved_cpus for p in self._pools.values())
        for p in idle:
            if reserved <= target_reserved:
                break
            p.kill()
            del self._pools[p.key]
            reserved -= p.reserved_cpus

    @staticmethod
    def _start(key: str, req: PoolRequest, cpus_each: float) -> LabelerPool:
        import ray

        cls = ray.remote(_LabelerActor).options(
            num_cpus=cpus_each, num_gpus=req.num_gpus or None, max_restarts=-1, max_task_retries=MAX_TASK_RETRIES,
            max_concurrency=CALLS_IN_ACTOR,
            # replicas and successive pools land on different nodes of a cluster
            scheduling_strategy="SPREAD")
        actors = [cls.remote(req.run) for _ in range(req.labeler.settings.concurrency)]
        return LabelerPool(key, req.run.name, actors, cpus_each)

    def _drop(self, pools: list[LabelerPool]) -> None:
        with self._lock:
            for p in pools:
                if self._pools.get(p.key) is p:
                    del self._pools[p.key]
                    p.kill()

    def release(self) -> None:
        """Kill every idle pool (weights unloaded, reservations freed); pools in use stay until their shard ends."""
        with self._lock:
            for key, p in list(self._pools.items()):
                if p.users == 0:
                    p.kill()
                    del self._pools[key]


POOLS = PoolRegistry()


def release_pools() -> None:
    """End of a run (or of its pseudolabel work): free the labeler actors this process started."""
    import ray

    if ray.is_initialized():
        POOLS.release()
