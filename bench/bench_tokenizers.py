"""Encode/decode throughput (samples/s) of every registry tokenizer, tiny and production-sized, random init,
on CPU. Prints one row per (tokenizer, profile). Not a timed test; run by hand:

    PYTHONPATH=. python bench/bench_tokenizers.py [--profiles tiny production] [--tokenizers semseg_vqvae ...]
        [--batch 8] [--threads 2] [--ddim-steps 5]

Diffusion decoders run ``--ddim-steps`` DDIM steps (each step is one UNet pass); their decode figure
scales ~linearly with the step count.
"""

from __future__ import annotations

import argparse
import time

import torch

from tokenize_stage.models import build_tokenizer
from tokenize_stage.registry import PROFILES, tokenizer_config, tokenizer_names
from tokenize_stage.synthetic import synthetic_batch


def _rate(fn, n: int, min_seconds: float) -> float:
    fn()  # warm-up (allocations, oneDNN primitive caches)
    runs, t0 = 0, time.perf_counter()
    while True:
        fn()
        runs += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            return runs * n / elapsed


@torch.no_grad()
def bench(name: str, profile: str, batch: int, ddim_steps: int, min_seconds: float) -> dict:
    cfg = tokenizer_config(name, profile)
    torch.manual_seed(0)
    model = build_tokenizer(cfg).eval()
    x = synthetic_batch(cfg, batch, seed=0)
    tokens = model.encode(x)
    kwargs = {"steps": ddim_steps} if cfg.architecture == "diffusion_vq" else {}
    return {"tokenizer": name, "profile": profile, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "tokens": cfg.n_tokens, "encode_per_s": _rate(lambda: model.encode(x), batch, min_seconds),
            "decode_per_s": _rate(lambda: model.decode(tokens, **kwargs), batch, min_seconds)}


def bytes_per_sample() -> None:
    """Uncompressed bytes per sample: a production-size raw pseudo label (.npy, as labelers store it)
    vs its token row (int16 x n_tokens, as token shards store it)."""
    import numpy as np

    from fourm_core.label_codec import npy_encode as npy_bytes
    from tokenize_stage.synthetic import synthetic_arrays

    print(f"{'tokenizer':28s} {'raw label (B)':>14s} {'tokens (B)':>10s} {'ratio':>8s}")
    for name in tokenizer_names():
        cfg = tokenizer_config(name, "production")
        raw = len(npy_bytes(synthetic_arrays(cfg, 1, seed=0)[0]))
        tok = cfg.n_tokens * np.dtype(np.int16).itemsize
        print(f"{name:28s} {raw:14d} {tok:10d} {raw / tok:8.0f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=PROFILES)
    p.add_argument("--tokenizers", nargs="+", default=tokenizer_names())
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ddim-steps", type=int, default=5)
    p.add_argument("--min-seconds", type=float, default=1.0)
    p.add_argument("--bytes", action="store_true", help="only print bytes per sample, raw labels vs tokens")
    args = p.parse_args()
    if args.bytes:
        return bytes_per_sample()
    torch.set_num_threads(args.threads)
    print(f"CPU, {args.threads} threads, batch {args.batch}, DDIM steps {args.ddim_steps}, random init")
    print(f"{'tokenizer':28s} {'profile':10s} {'params(M)':>9s} {'tokens':>6s} {'encode/s':>10s} {'decode/s':>10s}")
    for profile in args.profiles:
        for name in args.tokenizers:
            r = bench(name, profile, args.batch, args.ddim_steps, args.min_seconds)
            print(f"{r['tokenizer']:28s} {r['profile']:10s} {r['params_M']:9.2f} {r['tokens']:6d} "
                  f"{r['encode_per_s']:10.1f} {r['decode_per_s']:10.2f}", flush=True)


if __name__ == "__main__":
    main()
