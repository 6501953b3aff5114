"""The Ray pass over one shard: decode as tasks, then each labeler in dependency order, model labelers on their
long-lived actor pools (:mod:`pseudolabel.actor_pool`), model-free ones as tasks. The steps themselves
(:func:`~pseudolabel.runner.label_range`, decoding) are the local runner's, so both paths label alike."""

from __future__ import annotations

import functools
import itertools

import pyarrow as pa

from .actor_pool import POOLS, PoolRequest
from .runner import LabelerRun, decode_step, finish, label_range, run_empty
from .spec import Labeler


def _task_range(run: LabelerRun, offset: int, length: int, drop_pixels: bool, *tables) -> pa.Table:
    """A model-free labeler's step as a Ray task (the labeler is cached per worker process)."""
    return label_range(_cached_labeler(run), offset, length, drop_pixels, tables)


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


def run_ray(table: pa.Table, runs: list[LabelerRun], *, gpus_available: bool | None = None,
            pools=None) -> tuple[pa.Table, list[Labeler]]:
    """The same steps on Ray: decode as tasks, then per labeler in dependency order either its long-lived actor
    pool (model labelers, :mod:`pseudolabel.actor_pool`: weights loaded once per run, not per shard) or tasks.

    Every step works on chunks of its own batch size; chunks stream from step to step as object references, so
    batch 2 is decoded while batch 1 is labelled, and shards passed concurrently (threads) share the actors.
    """
    import ray

    pools = POOLS if pools is None else pools
    labelers = [r.build() for r in runs]
    if table.num_rows == 0:  # nothing to label: the steps only add their (empty) columns
        return run_empty(table, labelers), labelers
    resources = ray.cluster_resources()
    if gpus_available is None:
        gpus_available = resources.get("GPU", 0) > 0
    cpus = resources.get("CPU", 1.0)
    requests = [PoolRequest(run, lab, _gpus(lab, gpus_available)) for run, lab in zip(runs, labelers)
                if lab.uses_model]
    with pools.lease(requests, cpus) as leased:
        by_name = {p.name: p for p in leased}
        # Tasks get what the pools leave free (at least the budget's remainder), so a task always fits.
        free = max(cpus - pools.reserved_cpus(), min(1.0, cpus / 2))
        bs = min(lab.batch_size for lab in labelers)
        decode = _remote(decode_step).options(num_cpus=min(1.0, free), name="pseudolabel/decode",
                                              scheduling_strategy="SPREAD")
        refs = [decode.remote(table.slice(s, bs)) for s in range(0, table.num_rows, bs)]
        sizes = [min(bs, table.num_rows - s) for s in range(0, table.num_rows, bs)]
        for k, (run, lab) in enumerate(zip(runs, labelers)):
            last = k == len(runs) - 1
            groups = regroup(sizes, lab.batch_size)
            if lab.uses_model:
                refs = [by_name[run.name].submit(off, n, last, [refs[i] for i in idx]) for idx, off, n in groups]
            else:
                want = float(lab.settings.num_cpus or lab.resources.num_cpus)
                task = _remote(_task_range).options(num_cpus=min(want, free), name=f"pseudolabel/{run.name}",
                                                    scheduling_strategy="SPREAD")
                refs = [task.remote(run, off, n, last, *[refs[i] for i in idx]) for idx, off, n in groups]
            sizes = [n for _, _, n in groups]
        tables = ray.get(refs)
    return finish(pa.concat_tables(tables)), labelers


@functools.cache
def _remote(fn):
    """One Ray remote function per step function (exporting it to the cluster once per process, not per shard)."""
    import ray

    return ray.remote(fn)


def _gpus(lab: Labeler, gpus_available: bool) -> float:
    st = lab.settings
    return float((st.num_gpus if st.num_gpus is not None else lab.resources.num_gpus) if gpus_available else 0)
