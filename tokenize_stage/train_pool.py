"""Train several tokenizers at once, each in its own process with a fixed torch thread count.

    results = train_many(store, "demo", [cfg_a, cfg_b, ...], shards=None)   # UnitResults, in config order

Why processes and not threads: a training step holds the GIL for its Python part, and ``train_tokenizer`` seeds
torch's process-wide RNG and runs on its process-wide thread pool, so tokenizers sharing a process would neither
scale nor stay reproducible. Workers are spawned (no forked torch or store state); each sets the same fixed torch
thread count (``worker_plan``) and trains one tokenizer at a time. Workers take no tokenizer until all of them
are up: otherwise, on a loaded machine, the first worker to finish importing torch could train two tokenizers,
one after the other, before a slower one had started. Every draw in ``train_tokenizer`` is seeded, so a
tokenizer's weights do not depend on which worker trains it, on what trains beside it, or on how many workers
there are (tests/tokenize_models/test_train_pool.py). Tokenizers whose unit is already committed with its cache
key are answered here, without starting a worker; a single tokenizer left to train (the others cached, or only
one asked for) trains in the calling process at the workers' thread count, without a worker's start-up.

Progress records (``fourm.progress``: steps, loss, ETA) come back from the workers through a queue and are
re-logged in the calling thread, so a Prefect task's run log shows them as when training ran in that thread.

A failed tokenizer fails only itself: the others finish and commit, then one error is raised that names every
failed tokenizer, of the first failure's type (so a permanent error, e.g. a missing file, is still not retried).
"""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing
import os
import queue
import threading
from concurrent.futures import Future, ProcessPoolExecutor, wait
from typing import Any

from fourm_core.progress import LOGGER
from fourm_core.store import ArtifactStore
from fourm_core.units import UnitResult, cached_result, collecting_units

from .train_tokenizer import TrainTokenizerConfig, train_tokenizer

WORKERS_ENV = "FOURM_TOKENIZER_WORKERS"
THREADS_ENV = "FOURM_TOKENIZER_THREADS"
_DRAIN_EVERY_S = 0.5  # how often the caller re-logs the workers' progress records while it waits
_START_TOGETHER_S = 300.0  # how long a started worker waits for the others before it takes work alone
log = logging.getLogger(__name__)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def _positive_env(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    if not (text.isdigit() and int(text) > 0):
        raise ValueError(f"${name}={text!r} must be a positive whole number")
    return int(text)


def worker_plan(jobs: int, cpus: int | None = None) -> tuple[int, int]:
    """(worker processes, torch threads per worker) for ``jobs`` tokenizers on ``cpus`` CPUs.

    Threads: ``$FOURM_TOKENIZER_THREADS``, default 1. Fixed, not the CPUs shared out, because a tokenizer's
    weights depend on its torch thread count (reductions split differently): so they do not depend on how many
    tokenizers train at once, nor on the machine's size. Workers: as many as the CPUs hold at that thread count,
    or ``$FOURM_TOKENIZER_WORKERS`` (the operator's count), at most one per job."""
    threads = _positive_env(THREADS_ENV, 1)
    workers = _positive_env(WORKERS_ENV, max(1, (cpus or usable_cpus()) // threads))
    return max(1, min(jobs, workers)), threads


def _init_worker(records: Any, threads: int, started: Any) -> None:
    """In each worker: its torch thread count, its progress records sent to the caller (not printed here), then
    a wait at ``started`` (a barrier of all the pool's workers) so that no worker takes a tokenizer before the
    others can take theirs. A worker that never comes up only delays the others by ``_START_TOGETHER_S``."""
    import torch

    torch.set_num_threads(threads)
    progress = logging.getLogger(LOGGER)
    progress.handlers = [logging.handlers.QueueHandler(records)]
    progress.setLevel(logging.INFO)
    progress.propagate = False
    try:
        started.wait(_START_TOGETHER_S)
    except threading.BrokenBarrierError:
        log.warning("not every tokenizer worker started within %.0f s; this one starts alone", _START_TOGETHER_S)


def _train_in_worker(root: str, storage_options: dict[str, Any] | None, dataset: str, cfg: dict[str, Any],
                     force: bool, shards: list[int] | None) -> UnitResult:
    store = ArtifactStore(root, storage_options)
    return train_tokenizer(store, dataset, TrainTokenizerConfig(**cfg), force=force, shards=shards)


def _train_here(store: ArtifactStore, dataset: str, cfg: TrainTokenizerConfig, force: bool,
                shards: list[int] | None) -> UnitResult:
    """Train one tokenizer in this process as a worker would: the same fixed torch thread count (so the same
    weights), the caller's thread count and RNG state given back afterwards."""
    import torch

    _, threads = worker_plan(1)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):  # train_tokenizer seeds torch's process-wide RNG
            return train_tokenizer(store, dataset, cfg, force=force, shards=shards)
    finally:
        torch.set_num_threads(before)


def _cached(store: ArtifactStore, dataset: str, cfg: TrainTokenizerConfig,
            shards: list[int] | None) -> UnitResult | None:
    """The tokenizer's result when its unit is committed with its current cache key, else None."""
    try:
        with collecting_units() as units:
            train_tokenizer(store, dataset, cfg, shards=shards)  # builds the unit (reads its labels), trains nothing
    except Exception:  # e.g. too few labels: the worker fails the same way, and records the failure as a unit's
        return None
    return cached_result(store, units[0])


def _relog(records: Any) -> None:
    """Hand the workers' queued progress records to ``fourm.progress`` here (this thread has the run context)."""
    progress = logging.getLogger(LOGGER)
    while True:
        try:
            record = records.get_nowait()
        except queue.Empty:
            return
        progress.handle(record)


def _failure(failed: list[tuple[str, BaseException]], total: int) -> BaseException:
    """One exception naming every failed tokenizer, of the first failure's type when that type takes a message."""
    first = failed[0][1]
    what = "; ".join(f"{name}: {type(exc).__name__}: {exc}" for name, exc in failed)
    message = f"{len(failed)} of {total} tokenizer(s) failed, the others committed: {what}"
    try:
        exc = type(first)(message)
    except Exception:  # e.g. a pydantic ValidationError: keep the original
        return first
    return exc if str(exc) == message else first


def train_many(store: ArtifactStore, dataset: str, configs: list[TrainTokenizerConfig], *, force: bool = False,
               shards: list[int] | None = None) -> list[UnitResult]:
    """Train ``configs`` (see the module doc); their results in the same order. Raises when one failed."""
    results: dict[int, UnitResult] = {}
    todo = list(range(len(configs)))
    if not force:
        for i in list(todo):
            cached = _cached(store, dataset, configs[i], shards)
            if cached is not None:
                results[i] = cached
                todo.remove(i)
    failed: list[tuple[str, BaseException]] = []
    if len(todo) == 1:  # nothing to train beside it: a worker would only add its start-up (torch, diffusers)
        i = todo[0]
        try:
            results[i] = _train_here(store, dataset, configs[i], force, shards)
        except Exception as exc:
            failed.append((configs[i].tokenizer, exc))
    elif todo:
        workers, threads = worker_plan(len(todo))
        log.info("training %d tokenizer(s) of %s in %d process(es), %d torch thread(s) each: %s", len(todo),
                 dataset, workers, threads, ", ".join(configs[i].tokenizer for i in todo))
        ctx = multiprocessing.get_context("spawn")
        records = ctx.Queue()
        # one worker is spawned per submitted tokenizer up to ``workers`` (spawn start method), so all reach it
        started = ctx.Barrier(workers)
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(records, threads, started)) as pool:
            futures: dict[Future, int] = {
                pool.submit(_train_in_worker, store.root_uri, store.storage_options, dataset,
                            configs[i].model_dump(mode="json"), force, shards): i for i in todo}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=_DRAIN_EVERY_S)
                _relog(records)
                for fut in done:
                    i = futures[fut]
                    try:
                        results[i] = fut.result()
                    except Exception as exc:  # the unit recorded its failure in the store; the others go on
                        log.error("tokenizer %s of %s failed: %s: %s", configs[i].tokenizer, dataset,
                                  type(exc).__name__, exc)
                        failed.append((configs[i].tokenizer, exc))
        _relog(records)  # what the workers logged just before they finished
        records.close()
    if failed:
        raise _failure(failed, len(configs)) from failed[0][1]
    return [results[i] for i in range(len(configs))]
