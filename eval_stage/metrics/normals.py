"""Surface-normal metrics: angular error in degrees (4M-FACTS §8, DIODE protocol).

err = arccos(clamp(<n̂_pred, n̂_gt>, −1, 1)) in degrees, both vectors normalised to unit length;
reported over all valid pixels of the batch: mean, median and the % of pixels with err below
11.25°, 22.5° and 30°.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

THRESHOLDS = (11.25, 22.5, 30.0)


def angular_error_deg(pred: torch.Tensor, gt: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Per-pixel angle between normals. pred, gt (B, 3, H, W) (channels on ``dim``) -> (B, H, W) degrees."""
    p = F.normalize(pred.double(), dim=dim)
    g = F.normalize(gt.double(), dim=dim)
    cos = (p * g).sum(dim).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.acos(cos))


def normal_metrics(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None) -> dict[str, float]:
    """pred, gt (B, 3, H, W); valid (B, H, W) bool (default: gt of non-zero length).

    -> {"mean", "median", "pct_11.25", "pct_22.5", "pct_30"} (degrees, and percent 0..100)."""
    if valid is None:
        valid = gt.norm(dim=1) > 0
    err = angular_error_deg(pred, gt)[valid]
    if err.numel() == 0:
        return {"mean": math.nan, "median": math.nan, **{f"pct_{t:g}": math.nan for t in THRESHOLDS}}
    out = {"mean": float(err.mean()), "median": float(err.quantile(0.5))}
    for t in THRESHOLDS:
        out[f"pct_{t:g}"] = float((err < t).double().mean() * 100)
    return out
