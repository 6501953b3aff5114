"""Masked samples per second per core for the 4M-21 masking (256 in / 256 out).

Reference (4M-FACTS / issue 6): the per-sample Python masking of the reference release takes about
5.5 ms per sample for 15 modalities, ~180 samples/s per core; the target here is >= 20x that.

    PYTHONPATH=. python bench/bench_masking.py [--batch 256] [--iters 20] [--modalities 15|all]
"""

from __future__ import annotations

import argparse
import time

import torch

from train_stage.masking import Masker
from train_stage.mixture import load_mixture
from train_stage.synthetic_batch import random_raw_batch

REFERENCE_SAMPLES_PER_S = 180.0

# 15 modalities as in the reference measurement: the 4M-21 set without the input-only/pixel ones
# and without the two 14-px grids (their inclusion is reported by --modalities all).
FIFTEEN = ["caption", "det", "metadata", "color_palette", "human_poses", "sam_instance", "tok_rgb@224",
           "tok_depth@224", "tok_normal@224", "tok_semseg@224", "tok_clip@224", "tok_dinov2_global",
           "tok_imagebind_global", "tok_canny_edge@224", "tok_sam_edge@224"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--modalities", choices=["15", "all"], default="15")
    args = ap.parse_args()
    torch.set_num_threads(1)  # per core
    mix = load_mixture("4m21")
    mods = FIFTEEN if args.modalities == "15" else mix.modalities
    mix = mix.model_copy(update={"modalities": mods})
    masker = Masker(mix)
    raw = random_raw_batch(mods, args.batch, torch.Generator().manual_seed(0), t5_dim=4096)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        masker(raw, g)
    # CPU time of this (single-threaded) process: what one core spends, even when the machine is shared
    times, walls = [], []
    for _ in range(args.iters):
        t0, w0 = time.process_time(), time.perf_counter()
        masker(raw, g)
        times.append(time.process_time() - t0)
        walls.append(time.perf_counter() - w0)
    times.sort()
    walls.sort()
    median = times[len(times) // 2]
    rate = args.batch / median
    print(f"modalities: {len(mods)}  batch: {args.batch}  budgets: {mix.input_budget}/{mix.target_budget}  threads: 1")
    print(f"median batch CPU time: {median * 1e3:.1f} ms  ({median / args.batch * 1e3:.3f} ms/sample), "
          f"best {times[0] * 1e3:.1f} ms; median wall time {walls[len(walls) // 2] * 1e3:.1f} ms")
    print(f"masked samples/s per core: {rate:.0f} (median), {args.batch / times[0]:.0f} (best)")
    print(f"speed-up vs reference ~{REFERENCE_SAMPLES_PER_S:.0f}/s/core: {rate / REFERENCE_SAMPLES_PER_S:.1f}x "
          f"(target >= 20x)")


if __name__ == "__main__":
    main()
