"""Sampling throughput on CPU with random-init weights (issue 7 benchmarks).

* autoregressive caption decoding, tokens/s with and without the KV cache (fixed length: the closing sentinel does not
  stop the run), for the tiny and B presets;
* MaskGIT steps/s for a 196-token target (tok_depth@224) from RGB.

Usage: PYTHONPATH=. python bench/bench_sampling.py [--sizes tiny B] [--tokens 256] [--threads 2]
Random weights give the same cost as trained ones: the work per token does not depend on the values.
Figures are given per wall-clock second and per CPU second of this process (time.process_time): on a
shared machine the wall clock also counts time spent waiting for a core, the CPU clock does not.
"""

from __future__ import annotations

import argparse
import time

import torch

from eval_stage.generate import ModelAdapter, build_slots, decode_image_tokens, decode_sequence
from train_stage.model import FourM, preset

MODALITIES = ["rgb@224", "caption", "tok_depth@224"]


def build(size: str) -> FourM:
    torch.manual_seed(0)
    return FourM(preset(size, MODALITIES)).eval()


class Clock:
    """Wall and process-CPU seconds of a block."""

    def __enter__(self) -> "Clock":
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.w0, time.process_time() - self.c0


def bench_ar(model: FourM, n_tokens: int, kv_cache: bool, batch: int) -> tuple[float, float]:
    """-> generated tokens per wall second and per CPU second (all samples of the batch counted)."""
    adapter = ModelAdapter(model)
    state = {"rgb@224": torch.randn(batch, 3, 224, 224), "caption": torch.full((batch, 1), 4)}
    slots = build_slots(adapter, state, batch)
    with torch.no_grad(), Clock() as c:
        res = decode_sequence(adapter, slots, "caption", torch.Generator().manual_seed(0), max_new_tokens=n_tokens,
                              kv_cache=kv_cache, stop_at_end=False)
    assert res.target.shape[1] == n_tokens + 1
    return batch * n_tokens / c.wall, batch * n_tokens / c.cpu


def bench_maskgit(model: FourM, steps: int, batch: int) -> tuple[float, float]:
    """-> MaskGIT steps per wall second and per CPU second (each step: encoder + decoder over the
    still-masked queries of a 196-token target + sampling)."""
    adapter = ModelAdapter(model)
    state = {"rgb@224": torch.randn(batch, 3, 224, 224)}
    with torch.no_grad(), Clock() as c:
        decode_image_tokens(adapter, state, "tok_depth@224", batch, torch.Generator().manual_seed(0), steps=steps)
    return steps / c.wall, steps / c.cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", nargs="+", default=["tiny", "B"])
    ap.add_argument("--tokens", type=int, default=256, help="caption tokens to decode")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--maskgit-steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU threads {args.threads}, batch {args.batch}")
    for size in args.sizes:
        model = build(size)
        n_params = sum(p.numel() for p in model.parameters()) / 1e6
        bench_ar(model, 4, True, args.batch)  # warm-up (allocator, kernels)
        cached = bench_ar(model, args.tokens, True, args.batch)
        full = bench_ar(model, args.tokens, False, args.batch)
        mg = bench_maskgit(model, args.maskgit_steps, args.batch)
        print(f"[{size}] {n_params:.1f} M params, AR caption {args.tokens} tokens (wall / CPU clock):\n"
              f"    KV cache       {cached[0]:8.2f} / {cached[1]:8.2f} tok/s\n"
              f"    full recompute {full[0]:8.2f} / {full[1]:8.2f} tok/s\n"
              f"    speed-up       {cached[0] / full[0]:8.1f}x / {cached[1] / full[1]:7.1f}x\n"
              f"  MaskGIT 196-token target, {args.maskgit_steps} steps: {mg[0]:.2f} / {mg[1]:.2f} steps/s", flush=True)


if __name__ == "__main__":
    main()
