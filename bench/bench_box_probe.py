"""Can boxes be learnt from these scenes at all? A dedicated probe, no 4M model: RGB tokens -> the first box.

    PYTHONPATH=.:bench python bench/bench_box_probe.py --store store                               # the demo's store
    PYTHONPATH=.:bench python bench/bench_box_probe.py --store S --datasets demo1k demo1k-heldout --steps 2000
    PYTHONPATH=.:bench python bench/bench_box_probe.py --store store --head ce                     # 1000 bins, as det
    PYTHONPATH=.:bench python bench/bench_box_probe.py --store store --head soft                   # 1000 soft bins

The probe has the demo model's trunk size (dim 64, 4 heads, 2 encoder blocks over the 196 RGB tokens with 2-D
sin-cos positions) and four learnt queries that cross-attend to the encoded grid, one per coordinate of the
scene's first box (the det serialisation's order: nearest (x0, y0) to the origin), trained on its own with
batch 16. ``--head l1`` regresses the coordinates (sigmoid, L1); ``--head ce`` classifies each into the det
vocabulary's 1000 bins (cross-entropy), as the 4M decoder must; ``--head soft`` does the same against a Gaussian
over the neighbouring bins (an ordinal target the det vocabulary does not have). Every fifth of the run it prints the first box's
mean IoU with the truth on the training and the held-out scenes beside the mean training box's (the trivial
baseline), and the share of held-out scenes whose first box lands at IoU >= 0.5.

If this probe, with all its capacity and every step spent on the first box, does not place it on held-out scenes
better than the mean box, the 4M model (one of eight targets, through the same tokens) cannot either: the data or
the steps are too few. Figures: docs/evaluation.md, "Why the demo's boxes are not learnt".
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from bench_det_conditioning import _gt_boxes, _tokens
from eval_stage.metrics.boxes import box_iou
from train_stage.model.posemb import sincos_2d

DIM, HEADS, GRID, BINS = 64, 4, 14, 1000
SOFT_SIGMA = 15.0  # bins: about a third of an RGB token (1000 bins over 14 tokens)


def first_boxes(store, dataset: str, max_scenes: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 196) RGB tokens and (N, 4) normalised xyxy first box of each scene with a box (crop 0)."""
    rgb = _tokens(store, dataset, "tok_rgb@224")
    gt = _gt_boxes(store, dataset)
    keys = sorted(k for k in rgb if gt.get(k))[:max_scenes]
    first = [min(gt[k], key=lambda b: math.hypot(b[0], b[1])) for k in keys]
    return torch.tensor(np.stack([rgb[k] for k in keys]), dtype=torch.long), torch.tensor(first, dtype=torch.float32)


class BoxProbe(nn.Module):
    """(B, 196) token ids -> (B, 4, 1) coordinates (l1) or (B, 4, 1000) bin logits (ce)."""

    def __init__(self, head: str, vocab: int = 8192):
        super().__init__()
        self.embed = nn.Embedding(vocab, DIM)
        self.register_buffer("pos", sincos_2d(GRID, GRID, DIM)[0])  # the 4M model's own table
        block = nn.TransformerEncoderLayer(DIM, HEADS, 4 * DIM, 0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(block, 2, enable_nested_tensor=False)
        self.queries = nn.Parameter(torch.randn(4, DIM) * 0.02)
        self.cross = nn.MultiheadAttention(DIM, HEADS, batch_first=True)
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, 1 if head == "l1" else BINS)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.embed(tokens) + self.pos)
        out, _ = self.cross(self.queries.expand(len(tokens), -1, -1), h + self.pos, h)
        return self.head(self.norm(out))


def loss_fn(out: torch.Tensor, boxes: torch.Tensor, head: str) -> torch.Tensor:
    if head == "l1":
        return F.l1_loss(out.squeeze(-1).sigmoid(), boxes)
    target = (boxes * (BINS - 1)).round()
    if head == "ce":
        return F.cross_entropy(out.reshape(-1, BINS), target.long().reshape(-1))
    # soft: a Gaussian over the neighbouring bins (sigma SOFT_SIGMA bins), so a near miss costs less than a far one
    soft = torch.exp(-0.5 * ((torch.arange(BINS) - target[..., None]) / SOFT_SIGMA) ** 2)
    return -(soft / soft.sum(-1, keepdim=True) * out.log_softmax(-1)).sum(-1).mean()


def first_box_iou(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """(B,) IoU of each scene's predicted first box with its true one, both (B, 4) xyxy."""
    return box_iou(pred, true).diagonal().float()


def predict(out: torch.Tensor, head: str) -> torch.Tensor:
    """(B, 4) normalised xyxy."""
    return out.squeeze(-1).sigmoid() if head == "l1" else out.argmax(-1).float() / (BINS - 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", default="store")
    p.add_argument("--datasets", nargs=2, default=["demo", "demo-heldout"], metavar=("TRAIN", "HELDOUT"))
    p.add_argument("--head", choices=["l1", "ce", "soft"], default="l1")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-scenes", type=int, default=None, help="train on at most this many scenes")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    from fourm_core.store import ArtifactStore

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    store = ArtifactStore(args.store)
    x_tr, y_tr = first_boxes(store, args.datasets[0], args.max_scenes)
    x_te, y_te = first_boxes(store, args.datasets[1], None)
    print(f"{args.datasets[0]}: {len(x_tr)} training scenes, {args.datasets[1]}: {len(x_te)} held-out scenes; "
          f"head {args.head}, {args.steps} steps of 16")
    model = BoxProbe(args.head)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    mean_box = y_tr.mean(0, keepdim=True)
    base_te = first_box_iou(mean_box.expand_as(y_te), y_te)
    t0 = time.perf_counter()
    for step in range(args.steps + 1):
        idx = torch.randint(0, len(x_tr), (16,))
        loss = loss_fn(model(x_tr[idx]), y_tr[idx], args.head)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % max(1, args.steps // 5) == 0:
            with torch.no_grad():
                iou_tr = first_box_iou(predict(model(x_tr[:256]), args.head), y_tr[:256])
                iou_te = first_box_iou(predict(model(x_te), args.head), y_te)
            print(f"step {step:5d} ({time.perf_counter() - t0:5.0f} s) loss {loss.item():.3f} | first-box IoU: "
                  f"training {iou_tr.mean():.3f}, held-out {iou_te.mean():.3f} (mean box {base_te.mean():.3f}); "
                  f"held-out IoU >= 0.5: {(iou_te >= 0.5).float().mean():.1%} (mean box {(base_te >= 0.5).float().mean():.1%})",
                  flush=True)


if __name__ == "__main__":
    main()
