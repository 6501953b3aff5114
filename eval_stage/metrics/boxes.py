"""Box detection AP at IoU 0.5 and averaged over IoU 0.5:0.95 (COCO protocol, 4M-FACTS §8).

Per class c and IoU threshold t: detections of all images are ranked by score (at most ``max_dets``
per image and class, highest first); a detection is a true positive when it matches a not yet
matched ground-truth box of its image and class with IoU >= t (the unmatched one with the highest
IoU wins). With cumulative TP/FP counts, precision p_k = TP_k / (TP_k + FP_k) and recall
r_k = TP_k / n_gt; the precision envelope p̃(r) = max_{r' >= r} p(r') is read at the 101 recall
points 0, 0.01, ..., 1 (0 beyond the highest recall reached) and averaged: AP_{c,t}. AP@0.5 is the
mean over classes with at least one ground-truth box of AP_{c,0.5}; AP is the mean over classes and
t ∈ {0.50, 0.55, ..., 0.95}. This is COCOeval's "all areas, maxDets=100" number without crowd boxes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

IOU_THRESHOLDS = tuple(0.5 + 0.05 * i for i in range(10))
RECALL_POINTS = torch.linspace(0, 1, 101, dtype=torch.float64)


@dataclass
class Boxes:
    """The boxes of one image. boxes (N, 4) xyxy float; labels (N,) int; scores (N,) float (predictions only)."""

    boxes: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor | None = None


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, 4), (M, 4) xyxy -> (N, M) IoU (area = w·h, no +1, as in pycocotools)."""
    a, b = a.double(), b.double()
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def _match(iou: torch.Tensor, t: float) -> torch.Tensor:
    """Greedy matching of score-sorted detections (rows) to ground truth (cols) -> (N,) bool true positives."""
    n_det, n_gt = iou.shape
    taken = torch.zeros(n_gt, dtype=torch.bool)
    tp = torch.zeros(n_det, dtype=torch.bool)
    thr = min(t, 1 - 1e-10)
    for d in range(n_det):
        cand = torch.where(taken, torch.full_like(iou[d], -1.0), iou[d])
        if n_gt == 0:
            continue
        best = int(cand.argmax())
        if cand[best] >= thr:
            taken[best] = True
            tp[d] = True
    return tp


def _average_precision(scores: torch.Tensor, tp: torch.Tensor, n_gt: int) -> float:
    """101-point interpolated AP from per-detection scores and TP flags over all images."""
    order = torch.sort(scores, descending=True, stable=True).indices
    tp = tp[order].double()
    tps, fps = tp.cumsum(0), (1 - tp).cumsum(0)
    recall = tps / n_gt
    precision = tps / (tps + fps).clamp(min=1e-12)
    # envelope: precision at recall r is the best precision at any recall >= r
    precision = precision.flip(0).cummax(0).values.flip(0)
    idx = torch.searchsorted(recall, RECALL_POINTS, side="left")
    q = torch.where(idx < len(precision), precision[idx.clamp(max=max(len(precision) - 1, 0))]
                    if len(precision) else torch.zeros_like(RECALL_POINTS), torch.zeros_like(RECALL_POINTS))
    return float(q.mean())


def box_ap(preds: list[Boxes], gts: list[Boxes], max_dets: int = 100,
           iou_thresholds: tuple[float, ...] = IOU_THRESHOLDS) -> dict[str, float]:
    """AP over a list of images (one ``Boxes`` of predictions and one of ground truth per image).

    -> {"ap": mean over IoU 0.5:0.95, "ap50", "ap75", "per_class_ap50": {class: AP}}; NaN when there is
    no ground-truth box at all.
    """
    classes = sorted({int(c) for g in gts for c in g.labels.tolist()})
    ap = torch.zeros(len(classes), len(iou_thresholds), dtype=torch.float64)
    for ci, c in enumerate(classes):
        n_gt = 0
        scores, tps = [], [[] for _ in iou_thresholds]
        for p, g in zip(preds, gts, strict=True):
            gb = g.boxes[g.labels == c]
            n_gt += len(gb)
            sel = p.labels == c
            pb, ps = p.boxes[sel], p.scores[sel]
            order = torch.sort(ps, descending=True, stable=True).indices[:max_dets]
            pb, ps = pb[order], ps[order]
            iou = box_iou(pb, gb)
            scores.append(ps.double())
            for ti, t in enumerate(iou_thresholds):
                tps[ti].append(_match(iou, t))
        all_scores = torch.cat(scores)
        for ti in range(len(iou_thresholds)):
            ap[ci, ti] = _average_precision(all_scores, torch.cat(tps[ti]), n_gt)
    if not classes:
        return {"ap": float("nan"), "ap50": float("nan"), "ap75": float("nan"), "per_class_ap50": {}}
    i50 = min(range(len(iou_thresholds)), key=lambda i: abs(iou_thresholds[i] - 0.5))
    i75 = min(range(len(iou_thresholds)), key=lambda i: abs(iou_thresholds[i] - 0.75))
    return {
        "ap": float(ap.mean()),
        "ap50": float(ap[:, i50].mean()),
        "ap75": float(ap[:, i75].mean()),
        "per_class_ap50": {c: float(ap[ci, i50]) for ci, c in enumerate(classes)},
    }


def class_agnostic(b: Boxes) -> Boxes:
    """The same boxes with every label 0: AP on these asks only where the objects are, not what they are."""
    return Boxes(b.boxes, torch.zeros_like(b.labels), b.scores)


def class_f1(preds: list[Boxes], gts: list[Boxes]) -> float:
    """Micro F1 of the per-image class multisets, positions ignored: does a prediction name the right objects
    (two cups predicted for an image with one cup and one book: 1 true positive, 1 false positive, 1 miss)?
    NaN when there is neither a predicted nor a ground-truth box."""
    tp = fp = fn = 0
    for p, g in zip(preds, gts, strict=True):
        pc, gc = Counter(p.labels.tolist()), Counter(g.labels.tolist())
        hit = sum((pc & gc).values())
        tp, fp, fn = tp + hit, fp + sum(pc.values()) - hit, fn + sum(gc.values()) - hit
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
