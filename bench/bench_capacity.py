"""Capacity-plan inputs: counted FLOPs per sample of every GPU stage of build-dataset and pretrain, and the
GPU-hours they project to for CC12M and COYO-700M. Not a timed test; run by hand (a few minutes on CPU):

    PYTHONPATH=. python bench/bench_capacity.py [--skip sam] [--peak-tflops 989] [--mfu 0.3] [--train-mfu 0.4]

What is counted (torch's FlopCounterMode: matmuls, convolutions, attention; 1 multiply-add = 2 FLOPs):
* each model labeler's own ``label_batch`` on one stored-size image (256x341, ingest's shorter side 256),
  so its real preprocessing resolution and post-processing passes count; full-size architectures with
  random weights (``build_full``);
* the largest models on the meta device (shapes only, no weights in memory: T5-XXL alone is 19 GB in fp32):
  T5 on a caption of ``--caption-tokens``, SAM ViT-H's encoder at 1024² plus its mask decoder for every point
  of the 32x32 grid, the pose model per person crop;
* each production tokenizer's ``encode`` of one sample (pre-tokenization);
* a 4M-21 B training step per sample (train_stage.flops on a real masked 4M-21 batch: forward + backward).

What is assumed (printed, settable): the GPU's dense BF16 peak and the fraction of it reached (MFU). No
GPU was measured here: these are projections. CPU-side work (download, decode, canny, palette, metadata,
Parquet commits) is not in these figures: see docs/operations.md for its measured rates.
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

GPU_LABELERS = ["depth", "normals", "semseg", "clip", "dinov2", "imagebind", "t5", "detection", "human_poses", "sam"]
DATASETS = {"CC12M": 12.0e6, "COYO-700M": 747e6}


def count(model: torch.nn.Module | None, fn) -> float:
    """FLOPs of one call. Parameters are frozen first: FlopCounterMode's module tracker hooks tensors that
    require grad and fails under no_grad."""
    if model is not None:
        model.requires_grad_(False)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        fn()
    return float(fc.get_total_flops())


META = {"t5", "sam", "human_poses"}  # counted on the meta device; the detector runs for real: NMS has no meta kernel
UNTIMED = {"sam", "human_poses"}  # their label_batch needs more than a bare model (masks decoder, person crops)


def meta_flops(name: str, caption_tokens: int) -> tuple[float, str]:
    """(FLOPs per item, item) of a model forward counted on the meta device."""
    from pseudolabel.registry import labeler_class

    cls = labeler_class(name)
    lab = cls(cls.Settings(), available=frozenset(cls.needs))
    with torch.device("meta"):
        model = lab.build_full() if name != "sam" else None
        if name == "sam":
            from pseudolabel.sam.model import build_sam

            model = build_sam("vit_h", seed=None, nondegenerate=False)
    if name == "t5":
        ids = torch.zeros(1, caption_tokens, dtype=torch.long, device="meta")
        return count(model, lambda: model(input_ids=ids)), f"caption ({caption_tokens} tokens)"
    if name == "sam":
        from pseudolabel.sam.fast_decoder import decode_tokens, image_context, upscale_masks
        from pseudolabel.sam.fast_encoder import encode

        n_points = lab.settings.points_per_side ** 2
        size = model.image_encoder.img_size

        def run() -> None:
            emb = encode(model.image_encoder, torch.zeros(1, 3, size, size, device="meta"))
            ctx = image_context(model, emb)
            for start in range(0, n_points, lab.settings.points_per_batch):
                pts = torch.zeros(min(lab.settings.points_per_batch, n_points - start), 1, 2, device="meta")
                _, tokens, keys = decode_tokens(model, ctx, pts)
                upscale_masks(model, tokens, keys, ctx.grid)

        # the decoder indexes with boolean masks; on meta, nonzero() must assume every element is selected
        import torch.fx.experimental._config as fx_config

        with fx_config.patch(meta_nonzero_assume_all_nonzero=True):
            return count(model, run), f"image ({n_points} prompts)"
    if name == "detection":
        from pseudolabel.detection import get_family

        fam = get_family(lab.settings.family)
        if fam.resize == "square":
            h, w = fam.size, fam.size
        else:  # the stored 256x341 image, short edge to `size`, long edge at most `max_size`
            scale = min(fam.size / 256, fam.max_size / 341)
            h, w = round(256 * scale), round(341 * scale)
        import torch.fx.experimental._config as fx_config

        with fx_config.patch(meta_nonzero_assume_all_nonzero=True):  # box selection: every candidate kept
            return count(model, lambda: model(pixel_values=torch.zeros(1, 3, h, w, device="meta"))), "image"
    cfg = model.config if hasattr(model, "config") else None
    h, w = (cfg.image_height, cfg.image_width) if cfg is not None else (256, 192)
    return count(model, lambda: model(torch.zeros(1, 3, h, w, device="meta"))), "person crop"


def _full_labeler(name: str, device: str = "cpu", **settings):
    """The production labeler with a full-size random-weight model on ``device``, ready to label, placed the way
    its actor's ``setup`` places it; ``settings`` override the labeler's defaults (``matmul_precision``,
    ``autocast``)."""
    from pseudolabel.registry import labeler_class

    cls = labeler_class(name)
    lab = cls(cls.Settings(**settings), available=frozenset(cls.needs))
    torch.manual_seed(0)
    with torch.device(device):  # built in place: T5-XXL's 4.7 G parameters would take minutes to init on a CPU
        model = lab.build_full()
    lab.use_model(model)
    lab.place(device)  # also what torch.Tensor(...)-made parameters (Mask2Former's level_embed) need: CPU-born
    model = lab.model
    if name == "detection":  # what DetectionLabeler.setup() wraps around the model
        from pseudolabel.detection import Detector, get_family

        lab.detector = Detector(model=model, family=get_family(lab.settings.family), threshold=lab.settings.threshold,
                                max_detections=lab.settings.max_detections, batch_size=lab.batch_size)
    return lab, model


def _stored_batch(n: int):
    """n stored-size (256x341) photos with captions, as the pseudolabel stage hands them to ``label_batch``."""
    from pseudolabel.spec import Batch
    from pseudolabel.testing import PHOTOS, photo

    imgs = []
    for i in range(n):
        img = photo(PHOTOS[i % len(PHOTOS)], 256)[:256, :341]
        if img.shape[1] < 341:
            img = np.ascontiguousarray(np.pad(img, ((0, 0), (0, 341 - img.shape[1]), (0, 0)), mode="edge"))
        imgs.append(img)
    caption = "A red bus parked beside a stone building on a sunny street."
    return Batch([str(i) for i in range(n)], imgs, [caption] * n,
                 meta={"orig_width": [341] * n, "orig_height": [256] * n})


def labeler_flops(name: str) -> tuple[float, str]:
    """(FLOPs per image, what one item is) for one production labeler."""
    lab, model = _full_labeler(name)
    batch = _stored_batch(1)
    return count(model, lambda: lab.label_batch(batch)), "image"


def _supports_autocast(name: str) -> bool:
    from pseudolabel.registry import labeler_class

    return bool(getattr(labeler_class(name), "supports_autocast", False))


def labeler_seconds(name: str, device: str, images: int, repeats: int, settings: dict) -> float:
    """Measured seconds per image of the labeler's own ``label_batch`` (resize, normalise, forward, encode the
    rows) at full size on ``device``, in batches of ``images`` stored-size photos, after one warm-up batch;
    ``settings`` override the labeler's defaults."""
    lab, _ = _full_labeler(name, device, **settings)
    batch = _stored_batch(images)
    lab.label_batch(batch)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        lab.label_batch(batch)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / (repeats * images)


def tokenizer_flops(name: str) -> float:
    from tokenize_stage.models.hub import build_tokenizer
    from tokenize_stage.registry import tokenizer_config
    from tokenize_stage.synthetic import synthetic_batch

    cfg = tokenizer_config(name, "production")
    torch.manual_seed(0)
    model = build_tokenizer(cfg).eval()
    x = synthetic_batch(cfg, 1, seed=0)
    return count(model, lambda: model.encode(x))


def train_flops_per_sample() -> tuple[float, float, float]:
    """(train FLOPs per sample, encoder tokens, decoder tokens) of 4M-21 B on a real masked batch."""
    from fourm_core.modalities import get_modality
    from train_stage.batch import MODALITY_INDEX
    from train_stage.config import load_train_config
    from train_stage.flops import train_step_flops
    from train_stage.masking import Masker
    from train_stage.mixture import load_mixture
    from train_stage.model import preset
    from train_stage.synthetic_batch import random_raw_batch

    tc = load_train_config("4m21_b")
    mix = load_mixture(tc.mixture)
    cfg = preset(tc.model.size, tc.model.modalities)
    g = torch.Generator().manual_seed(0)
    n = 64
    b = Masker(mix)(random_raw_batch(mix.modalities, n, g, t5_dim=4096), g)
    n_in, n_out = float(b.enc_valid.sum()) / n, float(b.dec_valid.sum()) / n
    head = sum(float(((b.dec_modality == MODALITY_INDEX[m]) & (b.dec_labels >= 0)).sum()) * get_modality(m).vocab_size
               for m in cfg.domains_out) / n
    return train_step_flops(cfg, n_in, n_out, 1, head_vocab_tokens=head), n_in, n_out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip", nargs="*", default=[], help="labelers to leave out")
    ap.add_argument("--only", nargs="*", default=None, help="labelers to count (default: all GPU labelers)")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense BF16 peak per GPU (H100/H200 SXM)")
    ap.add_argument("--mfu", type=float, default=0.3, help="assumed MFU of labelers and tokenizers (inference)")
    ap.add_argument("--train-mfu", type=float, default=0.4, help="assumed MFU of 4M training (compiled, bf16)")
    ap.add_argument("--persons", type=float, default=1.5, help="person crops per image (human_poses)")
    ap.add_argument("--caption-tokens", type=int, default=32, help="T5 tokens of a caption (padding: longest)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parts", nargs="+", default=["labelers", "tokenizers", "train"],
                    choices=["labelers", "tokenizers", "train"])
    ap.add_argument("--time", metavar="DEVICE", default=None,
                    help="also time each labeler's label_batch at full size on DEVICE (e.g. cuda): measured ms/image "
                         "and the TFLOP/s and MFU it reaches (SAM and the pose model are counted only)")
    ap.add_argument("--time-batch", type=int, default=32, help="images per label_batch call when timing")
    ap.add_argument("--time-repeats", type=int, default=3, help="timed batches per labeler (after one warm-up)")
    ap.add_argument("--matmul-precision", choices=["highest", "high", "medium"], default=None,
                    help="the labelers' matmul_precision setting when timing (default: the settings' default)")
    ap.add_argument("--autocast", choices=["off", "bf16"], default=None,
                    help="the labelers' autocast setting when timing (default: the settings' default, off)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    peak = args.peak_tflops * 1e12

    rows: list[tuple[str, float]] = []  # (what, FLOPs per image)
    timed = f"  {'measured ms/item':>16s} {'TFLOP/s':>8s} {'MFU':>6s}" if args.time else ""
    print(f"{'labeler':14s} {'GFLOP/item':>11s}  item        {'count s':>7s}{timed}")
    for name in GPU_LABELERS:
        if name in args.skip or "labelers" not in args.parts or (args.only is not None and name not in args.only):
            continue
        t = time.perf_counter()
        f, item = meta_flops(name, args.caption_tokens) if name in META else labeler_flops(name)
        line = f"{name:14s} {f / 1e9:11.1f}  {item:11s} {time.perf_counter() - t:7.1f}"
        if args.time and name not in UNTIMED:
            if args.autocast == "bf16" and not _supports_autocast(name):
                line += "  (fp32 only: not timed under --autocast bf16)"
            else:
                settings = {k: v for k, v in (("matmul_precision", args.matmul_precision),
                                              ("autocast", args.autocast)) if v is not None}
                sec = labeler_seconds(name, args.time, args.time_batch, args.time_repeats, settings)
                line += f"  {sec * 1e3:16.2f} {f / sec / 1e12:8.1f} {f / sec / peak:6.1%}"
        print(line, flush=True)
        rows.append((f"label {name}", f * (args.persons if item == "person crop" else 1.0)))
        gc.collect()
    if "tokenizers" in args.parts:  # imported only then: the tokenizers need diffusers, a GPU box may lack it
        from tokenize_stage.registry import tokenizer_names

        print(f"\n{'tokenizer':28s} {'GFLOP/sample (encode)':>22s}")
        for name in tokenizer_names():
            f = tokenizer_flops(name)
            print(f"{name:28s} {f / 1e9:22.2f}", flush=True)
            rows.append((f"tokenize {name}", f))
            gc.collect()
    train, n_in, n_out = train_flops_per_sample()
    print(f"\n4M-21 B train step: {train / 1e9:.1f} GFLOP per sample ({n_in:.0f} input + {n_out:.0f} target tokens)")

    label = sum(f for w, f in rows if w.startswith("label"))
    tok = sum(f for w, f in rows if w.startswith("tokenize"))
    print(f"\nPROJECTION (assumptions: {args.peak_tflops:.0f} TFLOP/s dense BF16 per GPU, MFU {args.mfu:.0%} for "
          f"labelers/tokenizers, {args.train_mfu:.0%} for training; {args.persons} persons/image)")
    print(f"per image: labelers {label / 1e12:.2f} TFLOP -> {label / (peak * args.mfu) * 1e3:.1f} GPU-ms; "
          f"tokenizers {tok / 1e12:.3f} TFLOP -> {tok / (peak * args.mfu) * 1e3:.2f} GPU-ms")
    for ds, n in DATASETS.items():
        lh = n * label / (peak * args.mfu) / 3600
        th = n * tok / (peak * args.mfu) / 3600
        print(f"{ds:10s} {n / 1e6:6.0f}M images: pseudolabel {lh:9.0f} GPU-h, tokenize {th:7.0f} GPU-h "
              f"({(lh + th) / 8:8.0f} 8-GPU node-hours)")
    from train_stage.config import load_train_config

    tc = load_train_config("4m21_b")
    samples = tc.total_tokens / (n_in + n_out)  # 4M counts input + target tokens
    gh = samples * train / (peak * args.train_mfu) / 3600
    print(f"4M-21 B pre-training: {tc.total_tokens:.1e} tokens = {samples / 1e6:.0f}M samples of {n_in + n_out:.0f} "
          f"tokens: {gh:.0f} GPU-h ({gh / 8:.0f} 8-GPU node-hours; {gh / 64 / 24:.1f} days on 64 GPUs)")
    print(f"  (the preset's steps x batch: {tc.steps} x 4096 = {tc.steps * 4096 / 1e9:.1f}G samples, "
          f"{tc.steps * 4096 / samples:.1f}x the token budget: {tc.total_tokens:.1e} / 4096 / {n_in + n_out:.0f} = "
          f"{samples / 4096:.0f} steps)")


if __name__ == "__main__":
    main()
