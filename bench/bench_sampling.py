"""Sampling throughput on CPU with random-init weights (issue 7 benchmarks).

* autoregressive caption decoding, tokens/s with and without the KV cache (fixed length: [EOS] does not
  stop the run), for the tiny and B presets;
* MaskGIT steps/s for a 196-token target (tok_depth@224) from RGB.

Usage: PYTHONPATH=. python bench/bench_sampling.py [--sizes tiny B] [--tokens 256] [--threads 2]
Random weights give the same cost as trained ones: the work per token does not depend on the values.
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


def bench_ar(model: FourM, n_tokens: int, kv_cache: bool, batch: int) -> float:
    """-> generated tokens per second (all samples of the batch counted)."""
    adapter = ModelAdapter(model)
    state = {"rgb@224": torch.randn(batch, 3, 224, 224), "caption": torch.full((batch, 1), 4)}
    slots = build_slots(adapter, state, batch)
    t0 = time.perf_counter()
    with torch.no_grad():
        res = decode_sequence(adapter, slots, "caption", torch.Generator().manual_seed(0), max_new_tokens=n_tokens,
                              kv_cache=kv_cache, stop_at_eos=False)
    dt = time.perf_counter() - t0
    assert res.target.shape[1] == n_tokens + 1
    return batch * n_tokens / dt


def bench_maskgit(model: FourM, steps: int, batch: int) -> float:
    """-> MaskGIT steps per second (each step: encoder + decoder over 196 target queries + sampling)."""
    adapter = ModelAdapter(model)
    state = {"rgb@224": torch.randn(batch, 3, 224, 224)}
    t0 = time.perf_counter()
    with torch.no_grad():
        decode_image_tokens(adapter, state, "tok_depth@224", batch, torch.Generator().manual_seed(0), steps=steps)
    return steps / (time.perf_counter() - t0)


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
        print(f"[{size}] {n_params:.1f} M params | AR caption {args.tokens} tokens: KV cache {cached:.1f} tok/s, "
              f"full recompute {full:.1f} tok/s, speed-up {cached / full:.1f}x | MaskGIT 196-token target: "
              f"{mg:.2f} steps/s ({args.maskgit_steps} steps)")


if __name__ == "__main__":
    main()
