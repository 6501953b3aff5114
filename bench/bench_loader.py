"""Training loader throughput: samples/s delivered by ONE loader worker process at 4M-21 budgets.

    PYTHONPATH=. python bench/bench_loader.py                       # token modalities of 4M-21, 256/256
    PYTHONPATH=. python bench/bench_loader.py --raw-inputs          # + rgb@224 pixels and t5_caption rows
    PYTHONPATH=. python bench/bench_loader.py --workers 0           # in the training process (no IPC)
    PYTHONPATH=. python bench/bench_loader.py --learnable           # the tests' compressible synthetic content

Builds (once, in --store) a synthetic dataset in the documented shard format with production-size shards
(--shard-size samples, --crops crops each, every 4M-21 token modality, ``make_token_shards(realistic=True)``:
incompressible VQ codes on 14x14 / 16x16 grids, sequences up to their max length, 256-px JPEGs, 8-40 T5 rows),
then times ``ResumableLoader`` over ``TokenShardStream`` end to end (shard reads, collation, masking, the transfer
from the worker process), twice: with the 4M-21 masking and with masking replaced by an empty batch of the same
shapes, so the loader's own figure is separable from the masking's. The first batches (worker start, first
shard reads) are left out.

Figures: wall-clock samples/s per worker, and samples per CPU-second of the worker process (what one dedicated
core delivers; on a shared machine the wall clock also counts other people's work). Target (issue 14):
>= 1150 samples/s per worker, what one H100 at 40 % MFU consumes for 4M-21 B.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from multiprocessing.reduction import ForkingPickler
from pathlib import Path

import psutil
import torch

from fourm_core import ArtifactStore
from fourm_core.modalities import FOURM21, ModalityKind, get_modality
from train_stage.batch import MaskedBatch
from train_stage.data import DatasetSpec, PackedBatch, ResumableLoader, TokenShardStream, _Shard
from train_stage.masking import Masker, RawBatch
from train_stage.mixture import load_mixture
from train_stage.synthetic import make_token_shards

TARGET = 1150.0


class Unmasked:
    """Stands in for the masking: a zero MaskedBatch of the real shapes (same transfer), the raw pixels and
    embeddings passed through. Only for timing the loader without the masking."""

    def __init__(self, masker: Masker):
        self.modalities, self.n_in, self.n_out = masker.modalities, masker.input_budget, masker.target_budget

    def __call__(self, raw: RawBatch, generator: torch.Generator | None = None) -> MaskedBatch:
        B = raw.batch_size
        z = {n: torch.zeros(B, k, dtype=torch.long) for n, k in (("in", self.n_in), ("out", self.n_out))}
        v = {n: torch.zeros(B, k, dtype=torch.bool) for n, k in (("in", self.n_in), ("out", self.n_out))}
        return MaskedBatch(z["in"], z["in"].clone(), z["in"].clone(), v["in"], z["out"], z["out"].clone(),
                           z["out"].clone(), v["out"], z["out"].clone(), dict(raw.pixels), dict(raw.embeddings))


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by the processes ``pids``."""
    total = 0.0
    for p in pids:
        t = psutil.Process(p).cpu_times()
        total += t.user + t.system
    return total


def run_loader(stream: TokenShardStream, args) -> dict[str, float]:
    """Time ``args.batches`` batches through ResumableLoader after ``args.skip`` untimed ones."""
    loader = ResumableLoader(stream, num_workers=args.workers, prefetch_factor=4)
    for _ in range(args.skip):
        next(loader)
    pids = [w.pid for w in loader._it._workers] if args.workers else [os.getpid()]
    c0, m0, t0 = cpu_seconds(pids), time.process_time(), time.perf_counter()
    for _ in range(args.batches):
        next(loader)
    dt, main_cpu = time.perf_counter() - t0, time.process_time() - m0
    worker_cpu = cpu_seconds(pids) - c0
    loader.close()
    n = args.batches * args.batch
    return {"wall": n / dt / max(1, args.workers), "cpu": n / worker_cpu, "ms": dt / args.batches * 1e3,
            "main_ms": main_cpu / args.batches * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default=None, help="store root to build/reuse (default: a temporary folder)")
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--shards", type=int, default=3)
    ap.add_argument("--crops", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=60, help="timed batches")
    ap.add_argument("--skip", type=int, default=4, help="untimed first batches")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--raw-inputs", action="store_true", help="include rgb@224 pixels and t5_caption embeddings")
    ap.add_argument("--learnable", action="store_true", help="the tests' compressible learnable content instead of "
                    "production-like shards")
    args = ap.parse_args()
    torch.set_num_threads(1)

    raw_kinds = (ModalityKind.PIXELS, ModalityKind.EMBEDDING_SEQ)
    mods = [m for m in FOURM21 if args.raw_inputs or get_modality(m).kind not in raw_kinds]
    root = args.store or tempfile.mkdtemp(prefix="bench-loader-")
    store = ArtifactStore(root)
    kind = "learnable" if args.learnable else "realistic"
    dataset = f"bench-{kind}-{args.shard_size}x{args.crops}" + ("-raw" if args.raw_inputs else "")
    t0 = time.perf_counter()
    make_token_shards(store, dataset, mods, n_shards=args.shards, shard_size=args.shard_size, n_crops=args.crops,
                      realistic=not args.learnable)
    files = [p for p in Path(root, dataset).rglob("shard-*.parquet") if "errors" not in p.name]
    size = sum(p.stat().st_size for p in files)
    print(f"store {root}: {args.shards} shards x {args.shard_size} samples x {args.crops} crops, {kind} content, "
          f"{len(mods)} modalities ({', '.join(mods)}), {size / args.shards / 2**20:.1f} MiB of Parquet per shard "
          f"(ready in {time.perf_counter() - t0:.0f} s)")

    mix = load_mixture("4m21").model_copy(update={"modalities": mods})
    masker = Masker(mix)
    where = f"{args.workers} worker process(es)" if args.workers else "the main process (no workers)"
    print(f"budgets {mix.input_budget}/{mix.target_budget}, batch {args.batch}, {where}, {args.batches} timed "
          f"batches; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for label, m in (("with masking", masker), ("without masking", Unmasked(masker))):
        r = run_loader(TokenShardStream(root, [DatasetSpec(dataset, 1.0, tuple(mods))], m, args.batch), args)
        verdict = ", ".join(f"{'met' if r[k] >= TARGET else 'NOT met'} {how}" for k, how in
                            (("cpu", "per CPU-second"), ("wall", "by the wall clock")))
        print(f"  {label:16s}: {r['wall']:6.0f} samples/s per worker (wall, {r['ms']:.1f} ms per batch), "
              f"{r['cpu']:6.0f} samples per worker CPU-second; target {TARGET:.0f}: {verdict} "
              f"(trainer process: {r['main_ms']:.1f} ms CPU per batch)")
    breakdown(TokenShardStream(root, [DatasetSpec(dataset, 1.0, tuple(mods))], masker, args.batch), args)


def breakdown(stream: TokenShardStream, args) -> None:
    """Where a worker's time goes, measured in this process: shard read, collation, masking, transfer."""
    store = stream._store()
    d = stream.datasets[0]
    _Shard(store, d.name, stream.shards[0][0], d.modalities)  # warm: imports and first-use costs
    t0 = time.perf_counter()
    _Shard(store, d.name, stream.shards[0][-1], d.modalities)
    read = time.perf_counter() - t0
    cache, sizes, orders = {}, {}, {}
    stream.raw_batch(0, store, cache, sizes, orders)
    n = args.batches
    t0 = time.perf_counter()
    raws = [stream.raw_batch(i, store, cache, sizes, orders) for i in range(1, n + 1)]
    t1 = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    batches = [stream.masker(r, g) for r in raws]
    t2 = time.perf_counter()
    for b in batches:  # what the worker's pipe carries, pickled by value, and the unpickling on arrival
        buf = io.BytesIO()
        ForkingPickler(buf).dump(PackedBatch.pack(b))
        ForkingPickler.loads(buf.getvalue()).unpack()
    t3 = time.perf_counter()
    B = args.batch
    per = {"collate (incl. shard reads)": (t1 - t0) / n, "masking": (t2 - t1) / n, "transfer": (t3 - t2) / n}
    print(f"in this process: one shard read ({args.shard_size} samples): {read * 1e3:.0f} ms = "
          f"{read / args.shard_size * 1e3:.3f} ms per sample, once per shard and worker")
    print("  per batch: " + ", ".join(f"{k} {v * 1e3:.1f} ms ({B / v:.0f} samples/s)" for k, v in per.items()))


if __name__ == "__main__":
    main()
