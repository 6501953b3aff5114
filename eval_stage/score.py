"""Scoring in the evaluation space: references and tokenizer outputs brought to one space per target, the
metrics of eval_stage.metrics applied to them, and ensembles of sampled generations.

Evaluation space at the tokenizer's resolution S: depth (S, S) in its own units, normals (3, S, S) unit
vectors, semseg (S, S) int64 ids (+1 shifted, 0 = none), rgb (3, S, S) in [0, 1], edge (S, S) in {0, 1}.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

SCORED = ("depth", "normal", "semseg")  # tokenizer targets this stage scores
NUM_SEMSEG = 134  # 133 COCO panoptic classes + "none" (0), ids shifted by +1 (4M-FACTS §1)
# (metric, higher is better) leading each task's rows, as in the paper's table 1
PRIMARY = {"depth": ("abs_rel", False), "normal": ("mean", False), "semseg": ("miou", True)}
TASK = {"depth": "depth", "normal": "surface normals", "semseg": "semantic segmentation"}


def prepare_reference(target: str, raw: np.ndarray, crop, size: int) -> torch.Tensor:
    """A raw label / ground-truth array -> the evaluation space at the tokenizer's resolution, after the
    sample's crop: depth (S, S) in its own units (metres for ground truth), normals (3, S, S) unit vectors,
    semseg (S, S) int64 ids (+1 shifted, 0 = none), rgb (3, S, S) in [0, 1], edge (S, S) in {0, 1}."""
    from tokenize_stage.crops import apply_crop

    a = apply_crop(np.asarray(raw), crop, target, None)
    if target == "semseg":
        x = torch.from_numpy(a.astype(np.int64))[None, None].float()
        return F.interpolate(x, size=(size, size), mode="nearest")[0, 0].long()
    if target == "edge":
        x = torch.from_numpy((a > 0).astype(np.float32))[None, None]
        return F.interpolate(x, size=(size, size), mode="nearest")[0, 0]
    if target == "depth":
        x = torch.from_numpy(a.astype(np.float32))[None, None]
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0, 0]
    if target in ("normal", "rgb"):
        x = torch.from_numpy(a.astype(np.float32)).permute(2, 0, 1)[None]
        if target == "rgb":
            x = x / 255.0
        y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
        return F.normalize(y, dim=0) if target == "normal" else y.clamp(0, 1)
    raise ValueError(f"no evaluation space for tokenizer target {target!r}")


def tokenizer_input(target: str, ref: torch.Tensor) -> torch.Tensor:
    """A reference from :func:`prepare_reference` -> the tokenizer's normalised input (tokenize_stage.normalize)."""
    from tokenize_stage.normalize import robust_standardize

    if target == "depth":
        return robust_standardize(ref[None])
    if target == "normal":
        return ref.clamp(-1, 1)
    if target == "semseg":
        return ref.long()
    if target == "edge":
        return ref[None] * 2 - 1
    if target == "rgb":
        return ref * 2 - 1
    raise ValueError(target)


def decoded_to_eval(target: str, x: torch.Tensor) -> torch.Tensor:
    """Tokenizer decoder output (B, ...) -> evaluation space: depth (B, S, S) (relative), normals (B, 3, S, S)."""
    if target == "depth":
        return x[:, 0].float()
    if target == "normal":
        return F.normalize(x.float(), dim=1)
    if target == "semseg":
        return x.long()
    if target == "edge":
        return (x[:, 0].float() + 1) / 2
    if target == "rgb":
        return ((x.float() + 1) / 2).clamp(0, 1)
    return x


def score(target: str, pred: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """eval_stage.metrics for one target: depth abs_rel/δ1 (affine-aligned), normals angular errors, mIoU."""
    from .metrics import depth_metrics, miou, normal_metrics

    if target == "depth":
        if not bool((ref > 0).any()):
            return {"abs_rel": math.nan, "delta1": math.nan}
        return depth_metrics(pred.float(), ref.float())
    if target == "normal":
        return normal_metrics(pred.float(), ref.float())
    if target == "semseg":
        r = miou(pred.long(), ref.long(), num_classes=NUM_SEMSEG, ignore_index=0)
        return {"miou": r["miou"], "pixel_acc": r["pixel_acc"]}
    raise ValueError(target)


def ensemble(target: str, preds: list[torch.Tensor]) -> torch.Tensor:
    """S decoded samples (each (B, ...), evaluation space) -> one (B, ...) prediction: mean depth (or any
    continuous map), renormalised mean normal, per-pixel majority class. One sample is returned as is."""
    from .metrics import ensemble_mean, ensemble_normals, ensemble_vote

    if len(preds) == 1:
        return preds[0]
    x = torch.stack(preds)
    if target == "normal":
        return ensemble_normals(x)
    if target == "semseg":
        return ensemble_vote(x, NUM_SEMSEG)
    return ensemble_mean(x)

