"""Relative depth metrics with per-image affine (scale + shift) alignment (4M-FACTS §8).

Pseudo-label and 4M depth are relative (robust-standardised, §1), so a prediction is first mapped
onto the ground truth by the least-squares scale s and shift t of that image over its valid pixels:
    (s, t) = argmin Σ_valid (s·pred + t − gt)²
then  abs_rel = mean_valid |aligned − gt| / gt   and   δ1 = mean_valid [max(aligned/gt, gt/aligned) < 1.25].
Means are taken per image, then over images (each image weighs the same).
"""

from __future__ import annotations

import torch


def align_scale_shift(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Least-squares scale+shift of ``pred`` onto ``gt`` per image.

    pred, gt (B, H, W) float; valid (B, H, W) bool (default: all) -> aligned pred (B, H, W).
    Solved in closed form from the 2x2 normal equations in float64; an image whose valid pixels have
    constant prediction (singular system) gets scale 0 and shift mean(gt).
    """
    if valid is None:
        valid = torch.ones_like(gt, dtype=torch.bool)
    p = pred.double().flatten(1)
    g = gt.double().flatten(1)
    w = valid.flatten(1).double()
    n = w.sum(1)
    sp, sg = (w * p).sum(1), (w * g).sum(1)
    spp, spg = (w * p * p).sum(1), (w * p * g).sum(1)
    det = n * spp - sp * sp
    ok = det.abs() > 1e-12 * n.clamp(min=1) ** 2
    det_safe = torch.where(ok, det, torch.ones_like(det))
    scale = torch.where(ok, (n * spg - sp * sg) / det_safe, torch.zeros_like(det))
    shift = torch.where(ok, (spp * sg - sp * spg) / det_safe, sg / n.clamp(min=1))
    aligned = scale[:, None] * p + shift[:, None]
    return aligned.view_as(pred).to(pred.dtype)


def depth_metrics(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None,
                  align: bool = True) -> dict[str, float]:
    """abs_rel and δ1 (< 1.25) of (B, H, W) predictions against positive ground truth.

    Pixels with gt <= 0 are never valid (abs_rel divides by gt). Returns {"abs_rel", "delta1"},
    each the mean over images of the per-image mean over valid pixels.
    """
    valid = (gt > 0) if valid is None else (valid & (gt > 0))
    aligned = align_scale_shift(pred, gt, valid) if align else pred
    a, g, w = aligned.double(), gt.double(), valid.double()
    n = w.flatten(1).sum(1).clamp(min=1)
    g_safe = torch.where(valid, g, torch.ones_like(g))
    rel = ((a - g).abs() / g_safe * w).flatten(1).sum(1) / n
    # a non-positive aligned depth has no meaningful ratio: count it as a miss
    a_pos = a.clamp(min=1e-12)
    ratio = torch.maximum(a_pos / g_safe, g_safe / a_pos)
    hit = ((ratio < 1.25) & (a > 0)).double() * w
    d1 = hit.flatten(1).sum(1) / n
    has = valid.flatten(1).any(1)
    return {"abs_rel": float(rel[has].mean()), "delta1": float(d1[has].mean())}
