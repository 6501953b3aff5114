"""Training-step throughput of the 4M model: tokens/s, step time and MFU (counted FLOPs).

    PYTHONPATH=. python bench/bench_train_step.py --size tiny --batch 8 --steps 5
    PYTHONPATH=. python bench/bench_train_step.py --size B --batch 2 --steps 2
    PYTHONPATH=. python bench/bench_train_step.py --size B --device cuda --compile --batch 64 --steps 20
    PYTHONPATH=. python bench/bench_train_step.py --size B --device cuda --compile --max-batch
    PYTHONPATH=. python bench/bench_train_step.py --size B --device cuda --batch 128 --count-syncs --profile

CPU by default (fp32); on a GPU (--device cuda) bf16 autocast, and it prints the peak memory. MFU is
reported against a large square matmul measured in the same run on the same device, threads and dtype
(the practical peak of this machine), and also against --peak-flops when one is given (e.g. 989e12, the
H100 datasheet's dense bf16). --compile compiles each transformer block (what ``compile: true`` does in
training). --max-batch searches the largest per-device batch whose full step (forward, backward, AdamW)
fits, then measures at that batch. Batches come from the real masking (4M-21 mixture, 256/256 budgets)
on random tokens.
"""

from __future__ import annotations

import argparse
import time

import torch

from train_stage.capacity import fits_in_memory, largest_fitting
from train_stage.flops import measure_matmul_peak, train_step_flops
from train_stage.masking import Masker
from train_stage.mixture import load_mixture
from train_stage.model import FourM, preset
from train_stage.synthetic_batch import random_raw_batch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="tiny", choices=["tiny", "B", "L", "XL"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--peak-flops", type=float, default=None, help="also report MFU against this nominal peak")
    ap.add_argument("--compile", action="store_true", help="compile each transformer block (compile: true)")
    ap.add_argument("--max-batch", action="store_true", help="GPU: find the largest batch that fits, bench at it")
    ap.add_argument("--profile", action="store_true",
                    help="after timing, profile one step: the ops with the most self time (on the GPU, its kernels)")
    ap.add_argument("--count-syncs", action="store_true",
                    help="GPU: count the host-device synchronisations one step makes (each stalls kernel queuing)")
    ap.add_argument("--optim", default="adamw", choices=["adamw", "none"],
                    help="none: forward + backward only (B on a small CPU box: AdamW state would need ~13 GB)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    mix = load_mixture("4m21")
    cfg = preset(args.size, "4m21")
    model = FourM(cfg).to(dev)
    if args.compile:
        model.compile_blocks()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda") if args.optim == "adamw" else None
    masker = Masker(mix)

    def make_batches(batch_size: int, n: int) -> list:
        g = torch.Generator().manual_seed(0)
        return [masker(random_raw_batch(mix.modalities, batch_size, g, t5_dim=4096), g).to(dev) for _ in range(n)]

    def step(b) -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = model(b).loss
        loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)
        else:
            model.zero_grad(set_to_none=True)

    if args.max_batch:
        if dev.type != "cuda":
            raise SystemExit("--max-batch needs --device cuda: a CPU process is killed, not told, when it runs out")

        def probe_step(n: int) -> None:
            step(make_batches(n, 1)[0])
            torch.cuda.synchronize()

        args.batch = largest_fitting(fits_in_memory(probe_step), start=8)
        print(f"largest batch that fits (forward + backward + {args.optim}): {args.batch}")
        if args.batch == 0:
            return
        if args.compile:  # the search's many sizes made dynamo go dynamic; training runs one static shape
            torch._dynamo.reset()
    # at the largest batch only the probed footprint is known to fit: one batch on the device, as probed
    batches = make_batches(args.batch, 1 if args.max_batch else min(args.steps, 3))
    peak = measure_matmul_peak(dev, torch.bfloat16 if dev.type == "cuda" else torch.float32)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(args.warmup + args.steps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step(batches[i % len(batches)])
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    b = batches[0]
    n_in = float(b.enc_valid.sum()) / args.batch
    n_out = float(b.dec_valid.sum()) / args.batch
    from train_stage.batch import MODALITY_INDEX
    from fourm_core.modalities import get_modality

    head = sum(float(((b.dec_modality == MODALITY_INDEX[m]) & (b.dec_labels >= 0)).sum()) * get_modality(m).vocab_size
               for m in cfg.domains_out) / args.batch
    flops = train_step_flops(cfg, n_in, n_out, args.batch, head_vocab_tokens=head)
    step_s = sorted(times)[len(times) // 2]
    tokens = (n_in + n_out) * args.batch
    params = sum(p.numel() for p in model.parameters())
    print(f"model {args.size} ({params / 1e6:.0f} M params), device {dev}, threads {args.threads}, batch {args.batch}, "
          f"optimizer {args.optim}, "
          f"tokens/sample {n_in:.0f} in + {n_out:.0f} out")
    print(f"step time {step_s * 1e3:.0f} ms (median of {len(times)}), tokens/s {tokens / step_s:.0f}, "
          f"samples/s {args.batch / step_s:.2f}")
    achieved = flops / step_s
    kind = "bf16" if dev.type == "cuda" else f"fp32, {args.threads} threads"
    print(f"FLOPs/step {flops / 1e9:.1f} G, achieved {achieved / 1e9:.1f} GFLOP/s, "
          f"MFU {achieved / peak:.1%} of the measured matmul peak {peak / 1e9:.1f} GFLOP/s ({kind})")
    if args.peak_flops:
        print(f"MFU {achieved / args.peak_flops:.1%} of the given peak {args.peak_flops / 1e9:.0f} GFLOP/s")
    if dev.type == "cuda":
        print(f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB of "
              f"{torch.cuda.get_device_properties(dev).total_memory / 2**30:.1f} GiB")
    if args.count_syncs:
        print_sync_count(dev, lambda: step(batches[0]))
    if args.profile:
        print_profile(dev, lambda: step(batches[0]))


def print_sync_count(dev: torch.device, run_step) -> None:
    """Count the synchronisations CUDA reports while one step is queued (``set_sync_debug_mode``)."""
    if dev.type != "cuda":
        print("host-device syncs: only counted on a GPU")
        return
    import warnings

    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run_step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    # one warning per synchronising op; the mode's own "prototype feature" notice is not one
    syncs = [w for w in caught if "called a synchronizing CUDA operation" in str(w.message)]
    print(f"host-device syncs in one step: {len(syncs)}")


def print_profile(dev: torch.device, run_step) -> None:
    """Profile one step with ``torch.profiler`` and print the 15 ops with the most self time."""
    from torch.profiler import ProfilerActivity, profile

    cuda = dev.type == "cuda"
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        run_step()
        if cuda:
            torch.cuda.synchronize()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=15))


if __name__ == "__main__":
    main()
