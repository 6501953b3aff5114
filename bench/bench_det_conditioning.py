"""Is a checkpoint's ``det`` conditioned on the image? Teacher-forced figures on a demo store (no generation).

    PYTHONPATH=. python bench/bench_det_conditioning.py --store store            # the demo's store
    PYTHONPATH=. python bench/bench_det_conditioning.py --store store --step 500 --run demo
    PYTHONPATH=. python bench/bench_det_conditioning.py --store store --run R --pixels   # a run that takes rgb@224

For the training scenes (``demo``) and the held-out scenes (``demo-heldout``), crop 0, each sequence target
(det, caption) is teacher-forced from scratch ("[S_1] ... [EOS] [S_2]") with the scene's RGB tokens as the only
input (the evaluation's condition), then again with another scene's RGB tokens (a derangement):

* loss per token kind (det: v0/v1/v2/v3/class/[EOS]; caption: all) with the own and the shuffled RGB: a target
  whose loss does not move is not conditioned on the image;
* the decoder's cross-attention from the target's slots to the 196 RGB tokens, per layer: normalised entropy
  (1 = uniform) and, for det, the attention mass on the RGB tokens inside the scene's ground-truth boxes divided
  by their share of the grid (1 = no preference for the objects);
* for det, how far the first box's predicted x0 / y0 (the expected bin under the model's distribution over the
  1000 bins of its axis) moves between scenes against how far the true ones do.

The semantic map is shown beside, written from the mask token: its loss with the own and the shuffled RGB, and
its cross-attention (entropy, and the mass on the target cell's own RGB token x 196: 1 = no locality).
``--pixels`` conditions on the RGB pixels (``rgb@224``) instead, for a checkpoint that takes them. Figures and what
they showed: docs/evaluation.md, "Why the demo's boxes are not learnt".
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch


def _setup(store_root: str, run: str, step: int | None):
    from eval_stage.checkpoints import checkpoint_artifact, checkpoint_steps, load_checkpoint
    from fourm_core.store import ArtifactStore

    store = ArtifactStore(store_root)
    steps = checkpoint_steps(store, "training", run)
    step = steps[-1] if step is None else step
    manifest = store.read_manifest("training", checkpoint_artifact(run, step), None)
    return store, load_checkpoint(store, manifest), step


def _tokens(store, dataset: str, modality: str) -> dict[str, np.ndarray]:
    from eval_stage.read import read_tokens, token_shards

    return read_tokens(store, dataset, modality, token_shards(store, dataset, modality), [])


def _gt_boxes(store, dataset: str) -> dict[str, list[tuple[float, ...]]]:
    """key -> ground-truth boxes (normalised xyxy) cropped like crop 0."""
    import json

    from eval_stage.boxes_eval import _cropped
    from eval_stage.read import GT_ARTIFACT, read_crops

    shards = store.committed_shards(dataset, GT_ARTIFACT)
    crops = read_crops(store, dataset, shards, [])
    out = {}
    for s in shards:
        t = store.read_table(dataset, GT_ARTIFACT, s, columns=["sample_key", "boxes"])
        for k, v in zip(t.column("sample_key").to_pylist(), t.column("boxes").to_pylist()):
            if v is not None and k in crops:
                out[k] = [b for b, _ in _cropped([(b["xyxy"], b["class"]) for b in json.loads(v)], crops[k])]
    return out


def _batch(rgb: torch.Tensor, target: list[list[int]], modality: str, seq_input: bool):
    """Encoder: the 196 RGB tokens (B, 196) or, given float patches (B, 196, P·P·3), the RGB pixels (+ "[S_1]" of ``modality`` when ``seq_input``, as the evaluation gives it);
    decoder: each target row teacher-forced (slot t fed token t, labelled t + 1)."""
    from train_stage.batch import IGNORE, MODALITY_INDEX, MaskedBatch
    from train_stage.span_masking import SENTINEL0

    B, L = rgb.shape[:2]
    pixels = rgb.is_floating_point()
    n_in = L + (1 if seq_input else 0)
    enc_tokens = torch.zeros(B, n_in, dtype=torch.long)
    enc_tokens[:, :L] = torch.arange(L) if pixels else rgb  # pixels: the slot's row in ``pixels``
    enc_positions = torch.zeros(B, n_in, dtype=torch.long)
    enc_positions[:, :L] = torch.arange(L)
    enc_modality = torch.full((B, n_in), MODALITY_INDEX["rgb@224" if pixels else "tok_rgb@224"])
    if seq_input:
        enc_tokens[:, L] = SENTINEL0 + 1
        enc_modality[:, L] = MODALITY_INDEX[modality]
    T = max(len(t) for t in target) - 1
    dec_tokens = torch.zeros(B, T, dtype=torch.long)
    labels = torch.full((B, T), IGNORE, dtype=torch.long)
    dec_modality = torch.full((B, T), -1, dtype=torch.long)
    for b, t in enumerate(target):
        n = len(t) - 1
        dec_tokens[b, :n] = torch.tensor(t[:-1])
        labels[b, :n] = torch.tensor(t[1:])
        dec_modality[b, :n] = MODALITY_INDEX[modality]
    return MaskedBatch(enc_tokens=enc_tokens, enc_positions=enc_positions, enc_modality=enc_modality,
                       enc_valid=torch.ones(B, n_in, dtype=torch.bool), dec_tokens=dec_tokens,
                       dec_positions=torch.arange(T).expand(B, T).clone(), dec_modality=dec_modality,
                       dec_valid=dec_modality >= 0, dec_labels=labels, pixels={"rgb@224": rgb} if pixels else {})


def _pixels(store, dataset: str, keys: list[str]) -> torch.Tensor:
    """(B, 196, 16·16·3) ImageNet-normalised patches of each sample's crop 0, as the evaluation feeds rgb@224."""
    from eval_stage.generate.inputs import patchify
    from eval_stage.read import read_crops, read_images
    from train_stage.pixels import crop_rgb, normalize_rgb

    shards = store.committed_shards(dataset, "images")
    images = read_images(store, dataset, set(keys), shards, None)
    crops = read_crops(store, dataset, shards, [])
    x = torch.stack([normalize_rgb(crop_rgb(images[k], crops[k], 224)) for k in keys])
    return patchify(x, 16)


class _CrossAttention:
    """Records each decoder block's cross-attention probabilities (B, heads, Lq, Lk) on forward."""

    def __init__(self, model):
        self.probs: list[torch.Tensor] = []
        self.handles = [blk.cross_attn.register_forward_hook(self._hook) for blk in model.decoder]

    def _hook(self, module, args, output):
        x, context, mask = args
        B, Lq, D = x.shape
        h = module.num_heads
        q = module.q(x).view(B, Lq, h, D // h).transpose(1, 2)
        k, _ = module.kv(context).view(B, context.shape[1], 2, h, D // h).permute(2, 0, 3, 1, 4)
        s = q @ k.transpose(-1, -2) / math.sqrt(D // h)
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        self.probs.append(s.softmax(-1))

    def close(self):
        for hd in self.handles:
            hd.remove()


def _derangement(n: int, seed: int) -> torch.Tensor:
    """(n,) a permutation that moves every index: each scene gets another scene's RGB."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    while n > 1 and (perm == torch.arange(n)).any():
        perm = torch.randperm(n, generator=g)
    return perm


def _box_cells(boxes: list[tuple[float, ...]], grid: int = 14) -> np.ndarray:
    """(grid*grid,) bool: RGB tokens whose cell overlaps a box."""
    m = np.zeros((grid, grid), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        m[int(y0 * grid): max(int(math.ceil(y1 * grid)), int(y0 * grid) + 1),
          int(x0 * grid): max(int(math.ceil(x1 * grid)), int(x0 * grid) + 1)] = True
    return m.reshape(-1)


def _kind(tok: int) -> str:
    from tokenize_stage.text.vocab import CLASS_OFFSET, NUM_VALUES, VALUE_OFFSET

    if VALUE_OFFSET <= tok < CLASS_OFFSET:
        return f"v{(tok - VALUE_OFFSET) // NUM_VALUES}"
    if CLASS_OFFSET <= tok < CLASS_OFFSET + 80:
        return "class"
    return {3: "EOS"}.get(tok, "sentinel" if 4 <= tok < 204 else "word")


@torch.no_grad()
def det_figures(model, rgb: torch.Tensor, det: list[list[int]], boxes: list[list[tuple[float, ...]]],
                modality: str = "det", seq_input: bool = True, seed: int = 0) -> dict[str, float]:
    """Own vs shuffled RGB losses by token kind, cross-attention entropy / object mass, x0/y0 spread."""
    import torch.nn.functional as F

    from train_stage.batch import IGNORE
    from train_stage.span_masking import EOS, SENTINEL0

    B, L = rgb.shape[:2]
    perm = _derangement(B, seed)
    target = [[SENTINEL0 + 1] + list(d) + [EOS, SENTINEL0 + 2] for d in det]
    out: dict[str, float] = {}
    for name, r in (("own", rgb), ("shuffled", rgb[perm])):
        batch = _batch(r, target, modality, seq_input)
        rec = _CrossAttention(model) if name == "own" else None
        try:
            logits = {m: lg for m, (sel, lg) in model.logits(batch).items()}[modality]
        finally:
            if rec is not None:
                rec.close()
        sel = batch.dec_modality >= 0
        labels = batch.dec_labels[sel]
        ce = F.cross_entropy(logits.float(), labels, reduction="none")
        kinds = np.array([_kind(int(t)) for t in labels])
        out[f"loss/{name}/all"] = float(ce[labels != IGNORE].mean())
        for k in sorted(set(kinds)):
            out[f"loss/{name}/{k}"] = float(ce[torch.from_numpy(kinds == k)].mean())
        if name != "own":
            continue
        # the first box: expected x0 / y0 bin (slots 0 and 1 predict v0 and v1 of box 1)
        from tokenize_stage.text.vocab import NUM_VALUES, VALUE_OFFSET

        rows = torch.split(logits.float(), sel.sum(1).tolist())
        bins = torch.arange(NUM_VALUES, dtype=torch.float64)
        pred, true = [], []
        for b, lr in enumerate(rows):
            if len(det[b]) < 5:
                continue
            ex = []
            for axis in (0, 1):
                p = lr[axis, VALUE_OFFSET + axis * NUM_VALUES: VALUE_OFFSET + (axis + 1) * NUM_VALUES].softmax(-1)
                ex.append(float((p.double() * bins).sum()))
            pred.append(ex)
            true.append([det[b][0] - VALUE_OFFSET, det[b][1] - VALUE_OFFSET - NUM_VALUES])
        pred_a, true_a = np.array(pred), np.array(true)
        out["first_box/pred_x0_y0_std"] = float(pred_a.std(0).mean())
        out["first_box/true_x0_y0_std"] = float(true_a.std(0).mean())
        out["first_box/mae_bins"] = float(np.abs(pred_a - true_a).mean())
        out["first_box/mae_bins_mean_predictor"] = float(np.abs(true_a - true_a.mean(0)).mean())
        for layer, p in enumerate(rec.probs):  # (B, h, T, N_in)
            p = p[..., :L]
            p = p / p.sum(-1, keepdim=True).clamp(min=1e-12)
            ent = -(p.clamp(min=1e-12).log() * p).sum(-1) / math.log(L)  # (B, h, T)
            valid = sel[:, None, :].expand_as(ent)
            out[f"xattn/L{layer}/entropy"] = float(ent[valid].mean())
            if boxes is not None:
                ratios = []
                for b in range(B):
                    cells = torch.from_numpy(_box_cells(boxes[b]))
                    if not cells.any() or cells.all():
                        continue
                    mass = p[b][:, sel[b]][..., cells].sum(-1).mean()
                    ratios.append(float(mass) / float(cells.float().mean()))
                out[f"xattn/L{layer}/object_mass_ratio"] = float(np.mean(ratios)) if ratios else float("nan")
    return out


@torch.no_grad()
def image_figures(model, rgb: torch.Tensor, target: torch.Tensor, modality: str, seed: int = 0) -> dict[str, float]:
    """An image target (all its cells from the mask token) from the RGB tokens: loss with the own and the shuffled
    RGB, and the cross-attention entropy (1 = uniform) and the mass on the target cell's own RGB token (x196)."""
    import torch.nn.functional as F

    from train_stage.batch import MODALITY_INDEX, MaskedBatch

    B, L = rgb.shape[:2]
    pixels = rgb.is_floating_point()
    perm = _derangement(B, seed)
    out: dict[str, float] = {}
    for name, r in (("own", rgb), ("shuffled", rgb[perm])):
        pos = torch.arange(L).expand(B, L).clone()
        batch = MaskedBatch(enc_tokens=pos if pixels else r, enc_positions=pos,
                            enc_modality=torch.full((B, L), MODALITY_INDEX["rgb@224" if pixels else "tok_rgb@224"]),
                            enc_valid=torch.ones(B, L, dtype=torch.bool), dec_tokens=target, dec_positions=pos,
                            dec_modality=torch.full((B, L), MODALITY_INDEX[modality]),
                            dec_valid=torch.ones(B, L, dtype=torch.bool), dec_labels=target,
                            pixels={"rgb@224": r} if pixels else {})
        rec = _CrossAttention(model) if name == "own" else None
        try:
            logits = model.logits(batch)[modality][1]
        finally:
            if rec is not None:
                rec.close()
        out[f"loss/{name}/all"] = float(F.cross_entropy(logits.float(), target.reshape(-1)))
        if rec is None:
            continue
        for layer, p in enumerate(rec.probs):  # (B, h, L, L)
            ent = -(p.clamp(min=1e-12).log() * p).sum(-1) / math.log(L)
            out[f"xattn/L{layer}/entropy"] = float(ent.mean())
            out[f"xattn/L{layer}/own_cell_mass_x196"] = float(p.diagonal(dim1=-2, dim2=-1).mean() * L)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--store", default="store")
    p.add_argument("--run", default="demo")
    p.add_argument("--step", type=int, default=None)
    p.add_argument("--datasets", nargs=2, default=["demo", "demo-heldout"], metavar=("TRAIN", "HELDOUT"),
                   help="the training and the held-out scenes' datasets")
    p.add_argument("--max-scenes", type=int, default=None, help="score at most this many scenes of each")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-seq-input", action="store_true", help="no '[S_1]' encoder slot (as training's RGB-only "
                   "components give it: a target with input alpha 0 has no input slot at all)")
    p.add_argument("--pixels", action="store_true", help="condition on the RGB pixels (rgb@224) instead of the "
                   "RGB tokens, as the evaluation's condition rgb@224 does")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    store, model, step = _setup(args.store, args.run, args.step)
    print(f"checkpoint {args.run} step {step}")
    for ds in args.datasets:
        rgb_rows = _tokens(store, ds, "tok_rgb@224")
        det_rows = _tokens(store, ds, "det")
        cap_rows = _tokens(store, ds, "caption")
        gt = _gt_boxes(store, ds)
        keys = sorted(k for k in rgb_rows if k in det_rows and k in gt and k in cap_rows)[:args.max_scenes]
        rgb = _pixels(store, ds, keys) if args.pixels else torch.tensor(np.stack([rgb_rows[k] for k in keys]))
        figs = det_figures(model, rgb, [det_rows[k].tolist() for k in keys], [gt[k] for k in keys],
                           seq_input=not args.no_seq_input)
        cap = det_figures(model, rgb, [cap_rows[k].tolist() for k in keys], [gt[k] for k in keys], "caption",
                          seq_input=not args.no_seq_input)
        sem_rows = _tokens(store, ds, "tok_semseg@224")
        sem = image_figures(model, rgb, torch.tensor(np.stack([sem_rows[k] for k in keys])), "tok_semseg@224")
        print(f"\n== {ds}: {len(keys)} scenes ==")
        for k, v in figs.items():
            print(f"  det     {k:40s} {v:8.3f}")
        for k, v in cap.items():
            if not k.startswith("first_box"):
                print(f"  caption {k:40s} {v:8.3f}")
        for k, v in sem.items():
            print(f"  semseg  {k:40s} {v:8.3f}")


if __name__ == "__main__":
    main()
