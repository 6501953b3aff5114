"""Ensembling several generated samples of the same target before scoring (issue 7 point 4).

Depth: the per-pixel mean; normals: the mean vector renormalised; semantic maps: the per-pixel
majority class (ties go to the lowest class id).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ensemble_mean(samples: torch.Tensor) -> torch.Tensor:
    """(S, B, ...) -> (B, ...) mean over samples (depth maps, or any continuous prediction)."""
    return samples.mean(0)


def ensemble_normals(samples: torch.Tensor) -> torch.Tensor:
    """(S, B, 3, H, W) -> (B, 3, H, W) unit normals of the mean vector."""
    return F.normalize(samples.mean(0), dim=1)


def ensemble_vote(samples: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(S, B, H, W) int class maps -> (B, H, W) per-pixel majority class."""
    counts = F.one_hot(samples.long(), num_classes).sum(0)  # (B, H, W, C)
    return counts.argmax(-1)  # argmax returns the first maximum: lowest class id on ties
