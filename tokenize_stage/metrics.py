"""Tokenizer-bound metrics (4M-FACTS §8) and the trivial baselines a tokenizer must beat.

All functions take normalised tensors (see ``normalize``) batched along dim 0: the target ``x`` and a
reconstruction ``x_hat`` of the same shape (semseg: class-id maps (B, H, W)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# The one number per target the report leads with, and whether higher is better.
PRIMARY: dict[str, tuple[str, bool]] = {
    "rgb": ("l1", False), "depth": ("l1", False), "normal": ("l1", False), "edge": ("l1", False),
    "semseg": ("miou", True), "features": ("cosine", True), "mask": ("iou", True), "pose": ("l1", False),
    "global": ("cosine", True),
}


def psnr(x: torch.Tensor, x_hat: torch.Tensor, data_range: float = 2.0) -> float:
    """Mean over samples of 10 log10(range^2 / MSE); range 2 for tensors in [-1, 1]."""
    mse = ((x - x_hat) ** 2).flatten(1).mean(1).clamp(min=1e-10)
    return float((10 * torch.log10(data_range ** 2 / mse)).mean())


def miou(x: torch.Tensor, x_hat: torch.Tensor, n_classes: int = 134, ignore: int | None = None) -> float:
    """Mean IoU over classes present in the target or the prediction, accumulated over the whole set."""
    valid = torch.ones_like(x, dtype=torch.bool) if ignore is None else x != ignore
    t, p = x[valid].long(), x_hat[valid].long()
    inter = torch.bincount(t[t == p], minlength=n_classes).float()
    area_t = torch.bincount(t, minlength=n_classes).float()
    area_p = torch.bincount(p, minlength=n_classes).float()
    union = area_t + area_p - inter
    present = union > 0
    return float((inter[present] / union[present]).mean()) if present.any() else math.nan


def mask_iou(x: torch.Tensor, x_hat: torch.Tensor, threshold: float = 0.5) -> float:
    """Mean per-sample IoU of binary masks (prediction thresholded); empty vs empty counts as 1."""
    t, p = x.flatten(1) > threshold, x_hat.flatten(1) > threshold
    inter, union = (t & p).sum(1).float(), (t | p).sum(1).float()
    return float(torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).mean())


def cosine(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Mean cosine similarity: per vector for (B, D), per spatial position for (B, C, h, w) maps."""
    return float(F.cosine_similarity(x, x_hat, dim=1).mean())


def reconstruction_metrics(target: str, x: torch.Tensor, x_hat: torch.Tensor) -> dict[str, float]:
    """Every metric that applies to ``target``; always includes its PRIMARY metric."""
    x, x_hat = x.cpu(), x_hat.cpu()
    if target == "semseg":
        return {"miou": miou(x, x_hat), "pixel_acc": float((x == x_hat).float().mean())}
    if target == "mask":
        return {"iou": mask_iou(x, x_hat)}
    if target in ("features", "global"):
        out = {"cosine": cosine(x, x_hat), "l1": float((x - x_hat).abs().mean())}
        return out
    out = {"l1": float((x - x_hat).abs().mean()), "mse": float(((x - x_hat) ** 2).mean())}
    if target in ("rgb", "normal", "edge"):
        out["psnr"] = psnr(x, x_hat)
    if target == "normal":  # mean angular error in degrees, the DIODE protocol's number
        cos = F.cosine_similarity(x, x_hat, dim=1).clamp(-1, 1)
        out["angular_error_deg"] = float(torch.rad2deg(torch.acos(cos)).mean())
    return out


def baseline_prediction(target: str, train: torch.Tensor, n: int) -> torch.Tensor:
    """The trivial predictor fitted on ``train``, repeated for ``n`` held-out samples.

    semseg: the majority class everywhere; mask: per-pixel majority; everything else: the mean sample
    (mean image / mean feature map / mean embedding).
    """
    if target == "semseg":
        majority = torch.bincount(train.flatten().long()).argmax()
        return torch.full((n, *train.shape[1:]), int(majority), dtype=torch.long)
    if target == "mask":
        return (train.float().mean(0, keepdim=True) > 0.5).float().expand(n, *train.shape[1:]).clone()
    return train.float().mean(0, keepdim=True).expand(n, *train.shape[1:]).clone()


def beats(target: str, model_metrics: dict[str, float], baseline_metrics: dict[str, float]) -> bool:
    """Whether the tokenizer's primary metric is better than the baseline's."""
    name, higher = PRIMARY[target]
    a, b = model_metrics[name], baseline_metrics[name]
    return a > b if higher else a < b
