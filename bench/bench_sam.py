"""Images/s of segment_anything's SamAutomaticMaskGenerator vs our FastMaskGenerator at equal settings.

Runs on CPU. Models are random-init (tiny, and ViT-B-sized) so no weights
are needed; agreement (fraction of reference masks matched at IoU > 0.5, one-to-one, and mean IoU of
matched masks) is printed next to each speed figure. The low-resolution mode is compared with the
reference masks resized to its frame.

    PYTHONPATH=. python bench/bench_sam.py --threads 1 [--vitb-points 8 16 32] [--skip-vitb] [--tiny-points]

Each line also gives the embedding time of both generators (the reference's ``ImageEncoderViT``
forward and ours, timed once per model on the first image) and the per-prompt cost after the
embedding, ``(s/img - embedding) / points_per_side²``. Defaults take a few minutes; ViT-B at the
paper's 32² grid (``--vitb-points 32``) takes ~9 minutes more on one thread, mostly the reference.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator

from pseudolabel.sam.agreement import agreement
from pseudolabel.sam.fast_amg import AmgSettings, FastMaskGenerator
from pseudolabel.sam.fast_encoder import encode
from pseudolabel.sam.model import build_sam
from pseudolabel.sam.synthetic import shapes_image


def images(size: tuple[int, int], n: int) -> list[np.ndarray]:
    from skimage import data

    h, w = size
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    out = [cv2.resize(p, (w, h), interpolation=cv2.INTER_AREA) for p in photos]
    out.append(shapes_image(1, size=(h, w))[0])
    return out[:n]


def timed(fn, imgs):
    t0 = time.perf_counter()
    outs = [fn(im) for im in imgs]
    return outs, time.perf_counter() - t0


def ref_masks(anns, shape):
    return np.stack([a["segmentation"] for a in anns]) if anns else np.zeros((0,) + shape, bool)


_EMBED_TIMES: dict[int, tuple[float, float]] = {}


def embed_times(model, image) -> tuple[float, float]:
    """(reference, fast) seconds for one image embedding, measured once per model."""
    if id(model) not in _EMBED_TIMES:
        gen = FastMaskGenerator(model)
        x = torch.as_tensor(gen.transform.apply_image(image)).permute(2, 0, 1).contiguous()[None]
        x = model.preprocess(x)
        with torch.no_grad():
            t0 = time.perf_counter()
            model.image_encoder(x)
            t1 = time.perf_counter()
            encode(model.image_encoder, x)
            _EMBED_TIMES[id(model)] = (t1 - t0, time.perf_counter() - t1)
    return _EMBED_TIMES[id(model)]


def run(label: str, model, imgs, settings: AmgSettings, low_size: int | None) -> None:
    ref_gen = SamAutomaticMaskGenerator(model, **settings.reference_kwargs())
    fast_gen = FastMaskGenerator(model, settings)
    fast_gen.generate(imgs[0][:64, :64])  # warm-up (allocator, lazy init) on a small crop
    refs, t_ref = timed(ref_gen.generate, imgs)
    fasts, t_fast = timed(fast_gen.generate, imgs)
    fr, mi, n_ref, n_fast = [], [], 0, 0
    for im, r, f in zip(imgs, refs, fasts):
        rm = ref_masks(r, im.shape[:2])
        a, b = agreement(rm, f.masks.numpy())
        fr.append(a), mi.append(b)
        n_ref, n_fast = n_ref + len(rm), n_fast + len(f)
    n = len(imgs)
    e_ref, e_fast = embed_times(model, imgs[0])
    prompts = settings.points_per_side ** 2
    print(f"{label}: {n} image(s) {imgs[0].shape[1]}x{imgs[0].shape[0]}, points_per_side={settings.points_per_side}")
    print(f"  reference  {n / t_ref:8.4f} img/s  ({t_ref / n:7.2f} s/img)  masks {n_ref}  "
          f"embedding {e_ref:6.2f} s  per prompt {(t_ref / n - e_ref) / prompts * 1000:7.2f} ms")
    print(f"  fast       {n / t_fast:8.4f} img/s  ({t_fast / n:7.2f} s/img)  masks {n_fast}  "
          f"embedding {e_fast:6.2f} s  per prompt {(t_fast / n - e_fast) / prompts * 1000:7.2f} ms  "
          f"speed-up {t_ref / t_fast:5.2f}x  matched {np.mean(fr):.4f}  mean IoU {np.mean(mi):.4f}")
    if low_size:
        low = AmgSettings(**{**settings.__dict__, "output_size": low_size})
        low_gen = FastMaskGenerator(model, low)
        lows, t_low = timed(low_gen.generate, imgs)
        fr, mi = [], []
        for im, r, f in zip(imgs, refs, lows):
            h, w = f.masks.shape[1:]
            rm = ref_masks(r, im.shape[:2])
            rs = np.stack([cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0 for m in rm]) \
                if len(rm) else np.zeros((0, h, w), bool)
            a, b = agreement(rs, f.masks.numpy())
            fr.append(a), mi.append(b)
        print(f"  fast@{low_size:<4d}  {n / t_low:8.4f} img/s  ({t_low / n:7.2f} s/img)  "
              f"speed-up {t_ref / t_low:5.2f}x  matched {np.mean(fr):.4f}  mean IoU {np.mean(mi):.4f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tiny-images", type=int, default=4)
    ap.add_argument("--tiny-points", type=int, nargs="*", default=[16, 32])
    ap.add_argument("--vitb-images", type=int, default=1)
    ap.add_argument("--vitb-points", type=int, nargs="+", default=[8])
    ap.add_argument("--skip-vitb", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # Equal settings for both generators; random weights need a permissive IoU filter and a smaller
    # stability offset to keep masks (see tests/pseudolabel_sam/test_fast_amg_agreement.py).
    base = dict(pred_iou_thresh=0.0, stability_score_thresh=0.6, stability_score_offset=0.5, box_nms_thresh=1.0)
    tiny = build_sam("tiny", seed=0)
    for pps in args.tiny_points:
        run("tiny", tiny, images((240, 320), args.tiny_images), AmgSettings(points_per_side=pps, **base), 224)
    if not args.skip_vitb:
        vitb = build_sam("vit_b", seed=0, nondegenerate=True)
        for pps in args.vitb_points:
            run("vit_b (random init)", vitb, images((480, 640), args.vitb_images),
                AmgSettings(points_per_side=pps, points_per_batch=64, **base), 224)


if __name__ == "__main__":
    main()
