"""The train-tokenizers stage's time: one tokenizer after another in this process (how the stage ran before
tokenize_stage/train_pool.py) against the worker pool (one process per tokenizer up to the CPUs, one torch thread
each), on the committed labels of a store.

Alternates the modes ``--rounds`` times (retraining with ``force``), and prints for each run its seconds, the
load average before and after, the peak resident memory of this process and its workers together (sampled every
0.2 s), and whether the weights digests equal the previous run's of the same thread count.

    # labels first (the demo's: ingest + pseudolabel, ~2 min on 2 idle cores)
    PYTHONPATH=. python -m pipelines run --dataset demo --root /tmp/tok-bench --stages ingest pseudolabel --ray-address off
    PYTHONPATH=. python bench/bench_train_tokenizers.py --root /tmp/tok-bench
    PYTHONPATH=. python bench/bench_train_tokenizers.py --root /tmp/tok-bench --inprocess-threads 1 --rounds 2
    PYTHONPATH=. python bench/bench_train_tokenizers.py --root /tmp/tok-bench --steps 30 --tokenizers semseg_vqvae \
        clip_vqvae dinov2_global_memcodes mask_vq          # a quick ratio on a busy box
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
import torch  # noqa: E402

from fourm_core.config import load_dataset_config  # noqa: E402
from fourm_core.store import ArtifactStore  # noqa: E402
from tokenize_stage.stage import pretokenize_config  # noqa: E402
from tokenize_stage.train_pool import THREADS_ENV, train_many, worker_plan  # noqa: E402
from tokenize_stage.train_tokenizer import TrainTokenizerConfig, train_tokenizer  # noqa: E402


class PeakRss:
    """Peak summed RSS of this process and its children, sampled on a thread."""

    def __init__(self, every_s: float = 0.2):
        self.every_s, self.peak, self._stop = every_s, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:  # a worker that just exited
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.every_s)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def configs_of(dataset: str) -> list[TrainTokenizerConfig]:
    """The TrainTokenizerConfigs the dataset's train-tokenizers stage trains (tokenize_stage.training_stage)."""
    cfg = pretokenize_config(load_dataset_config(dataset))
    t = cfg.train
    return [TrainTokenizerConfig(tokenizer=n, profile=cfg.profile, steps=t.steps, batch_size=t.batch_size,
                                 eval_samples=t.eval_samples, sampling_steps=t.sampling_steps, model_grid=t.model_grid)
            for n in t.tokenizers]


def digests(results) -> list[str]:
    return [next(f.digest for f in r.manifests[0].files if f.name.endswith(".safetensors"))[:12] for r in results]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="store with the dataset's committed labels")
    ap.add_argument("--dataset", default="demo")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--modes", default="inprocess,pool", help="comma-separated, run in this order each round")
    ap.add_argument("--inprocess-threads", type=int, default=0, help="torch threads in-process (0: torch's default)")
    ap.add_argument("--tokenizers", nargs="*", default=None, help="a subset of the dataset's tokenizers")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the dataset config's)")
    args = ap.parse_args()

    store = ArtifactStore(args.root)
    name = load_dataset_config(args.dataset).name
    configs = [c for c in configs_of(args.dataset) if not args.tokenizers or c.tokenizer in args.tokenizers]
    if args.steps:
        configs = [c.model_copy(update={"steps": args.steps}) for c in configs]
    if args.inprocess_threads:
        torch.set_num_threads(args.inprocess_threads)
    pool_threads = int(os.environ.get(THREADS_ENV, "1"))
    workers, _ = worker_plan(len(configs))
    print(f"{len(configs)} tokenizers of {name}; {os.cpu_count()} CPUs; in-process torch threads "
          f"{torch.get_num_threads()}; pool {workers} workers x {pool_threads} thread(s)", flush=True)
    seen: dict[int, list[str]] = {}
    for r in range(args.rounds):
        for mode in args.modes.split(","):
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            with PeakRss() as rss:
                if mode == "inprocess":
                    results = [train_tokenizer(store, name, c, force=True) for c in configs]
                    threads = torch.get_num_threads()
                elif mode == "pool":
                    results = train_many(store, name, configs, force=True)
                    threads = pool_threads
                else:
                    raise SystemExit(f"unknown mode {mode!r}: inprocess or pool")
            seconds = time.perf_counter() - t0
            d = digests(results)
            same = "first at this thread count" if threads not in seen else (
                "identical" if seen[threads] == d else f"DIFFERENT: {seen[threads]} vs {d}")
            seen.setdefault(threads, d)
            print(f"round {r} {mode:9s} {seconds:7.1f} s  load {load0:5.1f} -> {os.getloadavg()[0]:5.1f}  peak RSS "
                  f"{rss.peak / 2**30:4.2f} GiB  torch threads/tokenizer {threads}  weights: {same}", flush=True)


if __name__ == "__main__":
    main()
