"""Evaluation throughput: wall seconds per phase and samples/s of one evaluate unit (forced, no cache).

    PYTHONPATH=. python bench/bench_evaluate.py                     # builds a small store in a temp dir
    PYTHONPATH=. python bench/bench_evaluate.py --store S --set dataset=ev --set checkpoint.run=tiny

Phases (from the unit's own timings): load (checkpoint + tokenizers), generate (MaskGIT per target),
score (tokenizer decodes of generated / stored / ground-truth tokens + metrics), tokens (held-out masked-token
loss), report (grid PNG). Process CPU time is printed beside the wall time (shared machines).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--store", default=None, help="existing store (default: build tests/eval/tiny_store in a temp dir)")
    p.add_argument("--config", default="demo")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from eval_stage.__main__ import parse_overrides
    from eval_stage.config import load_eval_config
    from eval_stage.evaluation import evaluate
    from fourm_core.store import ArtifactStore

    overrides = parse_overrides(args.set)
    if args.store is None:
        from tests.eval.tiny_store import build

        root = tempfile.mkdtemp(prefix="bench-eval-")
        build(f"{root}/store", dataset="ev", n_samples=16, shard_size=8, size=64, train_steps=2, batch_size=8, dim=64)
        args.store = f"{root}/store"
        overrides = {"dataset": "ev", "checkpoint.run": "tiny", **overrides}
    cfg = load_eval_config(args.config, overrides)
    store = ArtifactStore(args.store)
    t0, c0 = time.perf_counter(), time.process_time()
    res = evaluate(store, cfg, force=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    m = res.manifests[0]
    info = json.loads(store.read_bytes(store.data_path(m.dataset, m.artifact, None, ".metrics.json")))["info"]
    n = info["samples"]
    print(f"evaluate {m.dataset}/{m.artifact}: {n} samples, targets {info['targets']}, condition {info['condition']}")
    print(f"  wall {wall:.1f} s, process CPU {cpu:.1f} s, {n / wall:.2f} samples/s (wall)")
    print("  phases (wall s): " + ", ".join(f"{k} {v}" for k, v in info["seconds"].items()))


if __name__ == "__main__":
    main()
