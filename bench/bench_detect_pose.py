"""Detector and pose-model throughput on CPU, and the projected cost of labelling 12M images on one H100.

    PYTHONPATH=. python bench/bench_detect_pose.py [--threads 1] [--images 2] [--persons 2] [--skip-full]

Models are random-init (the same code path as real weights; speed does not depend on weight values):
``tiny`` profiles and the production-size architectures (RT-DETR R101-vd at 640x640, HMR2.0's ViT-H/16 at
256x192). Timed through the public functions ``detect`` / ``estimate_poses`` (pre- and post-processing
included) after one warm-up call.

Projection (no GPU was measured): FLOPs per image / crop are counted with torch's FlopCounterMode on the
production architectures; time on an H100 = FLOPs / (peak x MFU). Assumptions are printed and settable:
--peak-tflops (H100 SXM dense BF16, 989), --mfu-det, --mfu-pose, --persons-per-image, --usd-per-hour.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

N_IMAGES_TOTAL = 12_000_000


def fast_random_init(module) -> None:
    """Overwrite every parameter with N(0, 0.02) in place: full-size default inits take minutes on 2 shared
    cores; the values are irrelevant to speed (finite, no denormals)."""
    import torch

    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.02)


def build_full_quickly(build):
    """Construct a full-size model with torch's default init skipped (meta device, then empty + fast init)."""
    import torch

    with torch.device("meta"):
        obj = build()
    model = obj.model if hasattr(obj, "model") else obj
    model.to_empty(device="cpu")
    fast_random_init(model)
    for name, buf in model.named_buffers():  # buffers keep meaningful defaults (e.g. BN running stats)
        if buf.is_floating_point():
            buf.copy_(torch.ones_like(buf) if "var" in name else torch.zeros_like(buf))
    return obj


def count_flops(model, fn) -> float:
    """FLOPs of one call (matmuls, convs, attention; 1 multiply-add = 2 FLOPs). Parameters are frozen first:
    FlopCounterMode's module tracker hooks every tensor that requires grad and fails under no_grad."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model.requires_grad_(False)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        fn()
    return float(fc.get_total_flops())


def timed(fn, repeats: int = 1) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def bench_detector(profile: str, family: str, n_images: int):
    import numpy as np

    from pseudolabel.detection import build_detector, detect
    from pseudolabel.detection.detector import preprocess

    t0 = time.perf_counter()
    if profile == "full":
        det = build_full_quickly(lambda: build_detector(family, "full"))
        det.model.eval()
        det.index_map = {i: i for i in range(80)}
    else:
        det = build_detector(family, "tiny")
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(n_images)]
    x = preprocess(images[0], det.family)[None]
    flops = count_flops(det.model, lambda: det.model(pixel_values=x))
    sec = timed(lambda: detect(det, images))
    params = sum(p.numel() for p in det.model.parameters())
    return dict(what=f"detector {family}:{profile}", params=params, input=tuple(x.shape[2:]), build_s=build_s,
                per_item_s=sec / n_images, items_per_s=n_images / sec, flops=flops)


def bench_pose(profile: str, n_images: int, persons: int):
    import numpy as np
    import torch

    from pseudolabel.humans import PoseEstimator, build_pose_model, estimate_poses
    from pseudolabel.humans.config import PROFILES
    from pseudolabel.humans.model import HMR2
    from fourm_core.structured import Box, Detections

    t0 = time.perf_counter()
    model = build_full_quickly(lambda: HMR2(PROFILES["full"])).eval() if profile == "full" else build_pose_model()
    build_s = time.perf_counter() - t0
    est = PoseEstimator(model, batch_size=32)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(n_images)]
    boxes = [Box(xyxy=(0.1 + 0.8 * k / persons, 0.1, 0.1 + 0.8 * (k + 1) / persons, 0.9), class_name="person",
                 score=0.9) for k in range(persons)]
    dets = [Detections(boxes=boxes)] * n_images
    cfg = model.cfg
    flops = count_flops(model, lambda: model(torch.zeros(1, 3, cfg.image_height, cfg.image_width)))
    sec = timed(lambda: estimate_poses(est, images, dets))
    n = n_images * persons
    return dict(what=f"pose hmr2:{profile}", params=sum(p.numel() for p in model.parameters()),
                input=(cfg.image_height, cfg.image_width), build_s=build_s, per_item_s=sec / n,
                items_per_s=n / sec, flops=flops)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, default=2, help="images per timed call (full-size models)")
    ap.add_argument("--persons", type=int, default=2, help="person boxes per image in the pose benchmark")
    ap.add_argument("--skip-full", action="store_true")
    ap.add_argument("--family", default="rt_detr", help="production detector family to time at full size")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="H100 SXM dense BF16 peak (assumption)")
    ap.add_argument("--mfu-det", type=float, default=0.25, help="assumed MFU of the detector on H100 (conv nets)")
    ap.add_argument("--mfu-pose", type=float, default=0.40, help="assumed MFU of ViT-H pose crops on H100")
    ap.add_argument("--persons-per-image", type=float, default=1.5, help="assumed mean persons per CC12M image")
    ap.add_argument("--usd-per-hour", type=float, default=2.5, help="assumed H100 rental price")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    print(f"CPU threads: {args.threads} (os.cpu_count={os.cpu_count()}, shared machine: figures are noisy)")

    rows = [bench_detector("tiny", f, 4) for f in ("rt_detr", "detr", "deformable_detr")]
    rows.append(bench_pose("tiny", 4, args.persons))
    if not args.skip_full:
        rows.append(bench_detector("full", args.family, args.images))
        rows.append(bench_pose("full", 1, args.persons))
    print(f"\n{'model':32s} {'params':>10s} {'input':>11s} {'GFLOP/item':>10s} {'s/item':>8s} {'items/s':>8s} "
          f"{'CPU GFLOP/s':>11s} {'build s':>7s}")
    for r in rows:
        unit = "crop" if r["what"].startswith("pose") else "img"
        print(f"{r['what']:32s} {r['params'] / 1e6:9.2f}M {str(r['input']):>11s} {r['flops'] / 1e9:10.2f} "
              f"{r['per_item_s']:8.3f} {r['items_per_s']:8.2f} {r['flops'] / 1e9 / r['per_item_s']:11.1f} "
              f"{r['build_s']:7.1f}   (per {unit})")
    full = {r["what"].split(":")[0].split()[0]: r for r in rows if r["what"].endswith(":full")}
    if len(full) == 2:
        det, pose = full["detector"], full["pose"]
        peak = args.peak_tflops * 1e12
        cpu_s = det["per_item_s"] + args.persons_per_image * pose["per_item_s"]
        print(f"\nProjection for {N_IMAGES_TOTAL / 1e6:.0f}M images on one H100 from FLOP counts. ASSUMPTIONS: peak "
              f"{args.peak_tflops:.0f} TFLOP/s dense BF16, {args.persons_per_image} persons/image, "
              f"${args.usd_per_hour}/GPU-hour, image decode/resize/crops on CPU workers keep up.")
        scenarios = [("assumed MFU", args.mfu_det, args.mfu_pose), ("conservative (eager PyTorch)", 0.10, 0.10)]
        for label, mfu_det, mfu_pose in scenarios:
            det_s = det["flops"] / (peak * mfu_det)
            pose_s = pose["flops"] / (peak * mfu_pose)
            per_image = det_s + args.persons_per_image * pose_s
            hours = N_IMAGES_TOTAL * per_image / 3600
            print(f"  {label}: MFU detector {mfu_det}, pose {mfu_pose}")
            print(f"    detector {det['flops'] / 1e9:.1f} GFLOP/img -> {det_s * 1e3:.2f} ms/img "
                  f"= {1 / det_s:.0f} img/s")
            print(f"    pose     {pose['flops'] / 1e9:.1f} GFLOP/crop -> {pose_s * 1e3:.2f} ms/crop "
                  f"= {1 / pose_s:.0f} crops/s")
            print(f"    total    {per_image * 1e3:.2f} ms/img -> {hours:.1f} H100-hours = {hours / 24:.2f} days "
                  f"= ${hours * args.usd_per_hour:,.0f}   (implied speed-up over this CPU: {cpu_s / per_image:,.0f}x)")
        print(f"  measured CPU ({args.threads} thread(s)): {cpu_s:.1f} s/img -> "
              f"{N_IMAGES_TOTAL * cpu_s / 3600:,.0f} CPU-thread-hours for {N_IMAGES_TOTAL / 1e6:.0f}M images")


if __name__ == "__main__":
    main()
