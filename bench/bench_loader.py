"""Training loader throughput: masked samples/s delivered by ONE loader worker process at 4M-21 budgets.

    PYTHONPATH=. python bench/bench_loader.py                       # token modalities of 4M-21, 256/256
    PYTHONPATH=. python bench/bench_loader.py --raw-inputs          # + rgb@224 pixels and t5_caption rows
    PYTHONPATH=. python bench/bench_loader.py --workers 0           # in the training process (no IPC)

Builds (once, in --store) a synthetic dataset in the documented shard format with production-size
shards (--shard-size samples, --crops crops each, all 4M-21 token modalities), then times
``ResumableLoader`` over ``TokenShardStream`` with the 4M-21 masking mixture: reading shards, collation,
masking, and the transfer from the worker process. The first batches (worker start, first shard reads)
are left out. Target (issue 14): >= 1150 samples/s per worker, what one H100 at 40 % MFU consumes for
4M-21 B.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from fourm_core import ArtifactStore
from fourm_core.modalities import FOURM21, ModalityKind, get_modality
from train_stage.data import DatasetSpec, ResumableLoader, TokenShardStream
from train_stage.masking import Masker
from train_stage.mixture import load_mixture
from train_stage.synthetic import make_token_shards

TARGET = 1150.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default=None, help="store root to build/reuse (default: a temporary folder)")
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--crops", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=40, help="timed batches")
    ap.add_argument("--skip", type=int, default=4, help="untimed first batches")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--raw-inputs", action="store_true", help="include rgb@224 pixels and t5_caption embeddings")
    args = ap.parse_args()
    torch.set_num_threads(1)

    raw_kinds = (ModalityKind.PIXELS, ModalityKind.EMBEDDING_SEQ)
    mods = [m for m in FOURM21 if args.raw_inputs or get_modality(m).kind not in raw_kinds]
    root = args.store or tempfile.mkdtemp(prefix="bench-loader-")
    store = ArtifactStore(root)
    dataset = f"bench-{args.shard_size}x{args.crops}" + ("-raw" if args.raw_inputs else "")
    t0 = time.perf_counter()
    make_token_shards(store, dataset, mods, n_shards=args.shards, shard_size=args.shard_size, n_crops=args.crops)
    size = sum(p.stat().st_size for p in Path(root, dataset).rglob("shard-*.parquet") if "errors" not in p.name)
    print(f"store {root}: {args.shards} shards x {args.shard_size} samples x {args.crops} crops, "
          f"{len(mods)} modalities, {size / args.shards / 2**20:.1f} MiB per shard (ready in "
          f"{time.perf_counter() - t0:.0f} s)")

    mix = load_mixture("4m21").model_copy(update={"modalities": mods})
    stream = TokenShardStream(root, [DatasetSpec(dataset, 1.0, tuple(mods))], Masker(mix), args.batch)
    loader = ResumableLoader(stream, num_workers=args.workers, prefetch_factor=4)
    for _ in range(args.skip):
        next(loader)
    t0 = time.perf_counter()
    for _ in range(args.batches):
        b = next(loader)
    dt = time.perf_counter() - t0
    loader.close()
    rate = args.batches * args.batch / dt
    where = f"{args.workers} worker process(es)" if args.workers else "the main process (no workers)"
    per = rate / max(1, args.workers)
    print(f"budgets {mix.input_budget}/{mix.target_budget}, batch {args.batch}, {where}: "
          f"{rate:.0f} samples/s ({per:.0f} per worker), {dt / args.batches * 1e3:.1f} ms per batch; "
          f"target {TARGET:.0f} per worker: {'met' if per >= TARGET else 'NOT met'} ({per / TARGET:.2f}x)")
    print(f"last batch: {int(b.enc_valid.sum())} input + {int(b.dec_valid.sum())} target tokens, "
          f"pixels {sorted(b.pixels)}, embeddings {sorted(b.embeddings)}")
    breakdown(stream, args)


def breakdown(stream: TokenShardStream, args) -> None:
    """Where a worker's time goes, measured in this process: shard read, collation, masking, transfer."""
    import io
    from multiprocessing.reduction import ForkingPickler

    from train_stage.data import PackedBatch, _Shard

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
    per = {"collate": (t1 - t0) / n, "masking": (t2 - t1) / n, "transfer": (t3 - t2) / n}
    print(f"one shard read ({args.shard_size} samples): {read * 1e3:.0f} ms = {read / args.shard_size * 1e3:.2f} ms "
          "per sample, once per shard and worker")
    print("per batch: " + ", ".join(f"{k} {v * 1e3:.1f} ms ({B / v:.0f} samples/s)" for k, v in per.items()))
    rest = per["collate"] + per["transfer"]
    print(f"without masking the loader delivers {B / rest:.0f} samples/s per worker; masking is "
          f"{per['masking'] / sum(per.values()):.0%} of the worker's time")


if __name__ == "__main__":
    main()
