"""Mask agreement: one-to-one (Hungarian) matching of two mask sets by IoU."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def mask_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, H, W) bool x (M, H, W) bool -> (N, M) IoU."""
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def agreement(reference: np.ndarray, candidate: np.ndarray, min_iou: float = 0.5) -> tuple[float, float]:
    """(fraction of reference masks matched with IoU > min_iou, mean IoU of the matched pairs)."""
    if len(reference) == 0:
        return (1.0, 1.0) if len(candidate) == 0 else (0.0, 0.0)
    if len(candidate) == 0:
        return 0.0, 0.0
    iou = mask_iou_matrix(reference, candidate)
    rows, cols = linear_sum_assignment(-iou)
    good = iou[rows, cols] > min_iou
    return float(good.sum() / len(reference)), float(iou[rows, cols][good].mean()) if good.any() else 0.0
