"""Pixel-level reconstruction metrics: PSNR, L1, and mask IoU.

PSNR = 10·log10(R² / MSE) per image with R the data range, averaged over images; L1 = mean |p − t|;
mask IoU = |P ∩ G| / |P ∪ G| per mask (1 when both are empty).
"""

from __future__ import annotations

import torch


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> float:
    """pred, target (B, ...) float -> mean over images of the per-image PSNR in dB (inf for a perfect image)."""
    mse = (pred.double() - target.double()).pow(2).flatten(1).mean(1)
    return float((10 * torch.log10(data_range**2 / mse)).mean())


def l1_error(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> float:
    """Mean absolute error over all (valid) elements."""
    diff = (pred.double() - target.double()).abs()
    return float(diff[valid].mean() if valid is not None else diff.mean())


def mask_iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """pred, gt (N, H, W) bool -> (N,) IoU per mask pair."""
    p, g = pred.bool().flatten(1), gt.bool().flatten(1)
    inter = (p & g).sum(1).double()
    union = (p | g).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
