"""The Ray pass over one shard: decode as tasks, then each labeler in dependency order, model labelers on their
long-lived actor pools (:mod:`pseudolabel.actor_pool`), model-free ones as tasks. The steps themselves
(:func:`~pseudolabel.runner.label_range`, decoding) are the local runner's, so both paths label alike."""

from __future__ import annotations

import functools
import itertools
import time

import pyarrow as pa

from .actor_pool import POOLS, PoolRequest
from .runner import LabelerRun, decode_step, finish, from_wire, label_range, needs_pixels, run_empty, to_wire
from .spec import Labeler


def _task_range(run: LabelerRun, offset: int, length: int, drop_pixels: bool, decode: bool | None,
                *tables) -> pa.Buffer:
    """A model-free labeler's step as a Ray task (the labeler is cached per worker process); chunks in and out
    as Arrow IPC bytes (:func:`~pseudolabel.runner.to_wire`)."""
    return to_wire(label_range(_cached_labeler(run), offset, length, drop_pixels, [from_wire(t) for t in tables],
                               decode))


def _decode_task(chunk, pixels: bool) -> pa.Buffer:
    """:func:`~pseudolabel.runner.decode_step` as a Ray task, Arrow IPC bytes in and out."""
    return to_wire(decode_step(from_wire(chunk), pixels))


_TASK_LABELERS: dict[int, Labeler] = {}


def _cached_labeler(run: LabelerRun) -> Labeler:
    key = hash((run.name, repr(sorted(run.settings.items())), run.available))
    if key not in _TASK_LABELERS:
        lab = run.build()
        lab.setup()
        _TASK_LABELERS[key] = lab
    return _TASK_LABELERS[key]


def regroup(sizes: list[int], batch: int) -> list[tuple[list[int], int, int]]:
    """Consecutive chunks of ``sizes`` rows -> chunks of ``batch`` rows (the last may be shorter): for each new
    chunk, (indices of the old chunks it spans, offset into their concatenation, rows)."""
    starts = list(itertools.accumulate([0, *sizes]))
    total, out = starts[-1], []
    for a in range(0, total, batch):
        b = min(a + batch, total)
        idx = [i for i in range(len(sizes)) if starts[i] < b and starts[i + 1] > a]
        out.append((idx, a - starts[idx[0]], b - a))
    return out


# Rows per Ray call (a decode task, an actor call): several of the labeler's batches, labelled one batch at a
# time inside the call. A call costs a submission, an object put and a fetch (2-15 ms on a 2-core box, per
# call); with one call per batch a 32-image shard of a batch-4 labeler paid that 16 times, more than the model's
# time on a GPU. Bigger shards still stream in calls of this size (batch k+1 decoded while k is labelled), and
# shards passed concurrently overlap each other's decode, labelling and commit.
CALL_ROWS = 64


def call_rows(batch_size: int, rows: int, workers: int) -> int:
    """Rows per call for one step: a whole number of batches, at most ``max(CALL_ROWS, batch_size)``, and
    small enough that each of the step's ``workers`` (a pool's actors) gets a call."""
    per_worker = -(-rows // max(workers, 1))
    batches = max(1, min(CALL_ROWS // batch_size, -(-per_worker // batch_size)))
    return batches * batch_size


# Where the JPEGs are decoded. A decode task per call costs a Ray hop (submission, scheduling, a put of the raw
# pixels, ~12x the JPEG bytes, and the actor's fetch of them): more than the decode itself (~1 ms per 224² image)
# at a small shard. So the pass's first step decodes its own rows (the step's actor or task; the next batch in a
# thread while the model labels this one: runner.decoded_batches), unless that step runs on a GPU: then decode
# tasks spread over all the CPUs keep the GPU fed instead of one actor process decoding for it.
# A caption-only pass (no labeler reads pixels) never reads the image bytes at all. False: decode tasks always.
DECODE_IN_FIRST_STEP = True


def decode_in_first_step(pixels: bool, first_step_gpus: float) -> bool:
    """Whether the pass's first step decodes its rows itself rather than separate decode tasks (see above)."""
    return DECODE_IN_FIRST_STEP and (not pixels or not first_step_gpus)


def run_ray(table: pa.Table, runs: list[LabelerRun], *, gpus_available: bool | None = None,
            pools=None) -> tuple[pa.Table, list[Labeler]]:
    """The same steps on Ray: decode (in the first step, or as tasks: :func:`decode_in_first_step`), then per
    labeler in dependency order either its long-lived actor pool (model labelers, :mod:`pseudolabel.actor_pool`: weights loaded once per run, not per shard) or tasks.

    Every step works on calls of several of its batches (:func:`call_rows`); calls stream from step to step as
    object references, so call 2 is decoded while call 1 is labelled, and shards passed concurrently (threads)
    share the actors.
    """
    import ray

    pools = POOLS if pools is None else pools
    labelers = [r.build() for r in runs]
    if table.num_rows == 0:  # nothing to label: the steps only add their (empty) columns
        return run_empty(table, labelers), labelers
    resources = cluster_resources()
    if gpus_available is None:
        gpus_available = resources.get("GPU", 0) > 0
    cpus = resources.get("CPU", 1.0)
    requests = [PoolRequest(run, lab, _gpus(lab, gpus_available)) for run, lab in zip(runs, labelers)
                if lab.uses_model]
    with pools.lease(requests, cpus) as leased:
        by_name = {p.name: p for p in leased}
        # Tasks get what the pools leave free (at least the budget's remainder), so a task always fits.
        free = max(cpus - pools.reserved_cpus(), min(1.0, cpus / 2))
        rows = table.num_rows
        workers = [len(by_name[r.name].actors) if lab.uses_model else 1 for r, lab in zip(runs, labelers)]
        call = [call_rows(lab.batch_size, rows, w) for lab, w in zip(labelers, workers)]
        pixels = needs_pixels(labelers)
        # every chunk travels between the steps as Arrow IPC bytes (runner.to_wire), not as a pickled table
        refs = [to_wire(table.slice(s, call[0])) for s in range(0, rows, call[0])]
        sizes = [min(call[0], rows - s) for s in range(0, rows, call[0])]
        first_decodes = decode_in_first_step(pixels, requests[0].num_gpus if labelers[0].uses_model else 0.0)
        if not first_decodes:
            decode = _remote(_decode_task).options(num_cpus=min(1.0, free), name="pseudolabel/decode",
                                                  scheduling_strategy="SPREAD")
            refs = [decode.remote(t, pixels) for t in refs]
        for k, (run, lab) in enumerate(zip(runs, labelers)):
            last = k == len(runs) - 1
            groups = regroup(sizes, call[k])
            dec = pixels if k == 0 and first_decodes else None
            if lab.uses_model:
                refs = [by_name[run.name].submit(off, n, last, [refs[i] for i in idx], dec) for idx, off, n in groups]
            else:
                want = float(lab.settings.num_cpus or lab.resources.num_cpus)
                task = _remote(_task_range).options(num_cpus=min(want, free), name=f"pseudolabel/{run.name}",
                                                    scheduling_strategy="SPREAD")
                refs = [task.remote(run, off, n, last, dec, *[refs[i] for i in idx]) for idx, off, n in groups]
            sizes = [n for _, _, n in groups]
        tables = [from_wire(b) for b in ray.get(refs)]
    return finish(pa.concat_tables(tables)), labelers


# How long a read of the cluster's resources is reused: a GCS round trip per shard cost 5-45 ms (idle to busy
# 2-core box), as much as labelling a small shard; an autoscaled cluster's new nodes are seen within this.
RESOURCES_TTL_S = 10.0
_RESOURCES: dict[str, tuple[float, dict[str, float]]] = {}


def cluster_resources() -> dict[str, float]:
    """``ray.cluster_resources()`` of the current Ray session, re-read at most every ``RESOURCES_TTL_S``."""
    import ray

    job = ray.get_runtime_context().get_job_id()
    hit = _RESOURCES.get(job)
    if hit is None or time.monotonic() - hit[0] > RESOURCES_TTL_S:
        hit = _RESOURCES[job] = (time.monotonic(), ray.cluster_resources())
    return hit[1]


@functools.cache
def _remote(fn):
    """One Ray remote function per step function (exporting it to the cluster once per process, not per shard)."""
    import ray

    return ray.remote(fn)


def _gpus(lab: Labeler, gpus_available: bool) -> float:
    st = lab.settings
    return float((st.num_gpus if st.num_gpus is not None else lab.resources.num_gpus) if gpus_available else 0)
