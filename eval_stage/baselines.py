"""The trivial baselines beside each dense target: the mean depth map, the mean normal map and the majority
class, fitted on references of the checkpoint's own training samples ("the training-set mean")."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fourm_core.manifest import Manifest
from fourm_core.modalities import get_modality
from fourm_core.store import ArtifactStore

from .plan import Plan
from .read import GT_COLUMNS, read_ground_truth, read_label_arrays
from .score import prepare_reference


def baseline_prediction(target: str, fit_refs: torch.Tensor, n: int) -> tuple[torch.Tensor, str]:
    """The trivial predictor fitted on references ``fit_refs`` (N, ...) repeated ``n`` times, and its name."""
    if target == "depth":
        valid = (fit_refs > 0).float()
        mean = (fit_refs * valid).sum(0) / valid.sum(0).clamp(min=1)
        return mean.expand(n, *mean.shape).clone(), "mean depth map"
    if target == "normal":
        mean = F.normalize(fit_refs.float().mean(0), dim=0)
        return mean.expand(n, *mean.shape).clone(), "mean normal map"
    if target == "semseg":
        ids = fit_refs[fit_refs > 0]
        majority = int(torch.bincount(ids.flatten()).argmax()) if ids.numel() else 0
        return torch.full((n, *fit_refs.shape[1:]), majority, dtype=torch.long), f"majority class ({majority - 1})"
    raise ValueError(target)


def fit_references(store: ArtifactStore, plan: Plan, modality: str, target: str, ref_name: str, size: int,
                   limit: int) -> torch.Tensor | None:
    """References (pseudo labels or ground truth, crop 0, evaluation space) of up to ``limit`` of the
    checkpoint's training samples (``plan.fit_shards``): what the trivial baseline is fitted on; None if none."""
    from tokenize_stage.crops import Crop

    out: list[torch.Tensor] = []
    scratch: list[Manifest] = []  # the plan keyed these parts already
    for d, shards in plan.fit_shards.items():
        if ref_name == "pseudo label":
            arrays = read_label_arrays(store, d, get_modality(modality).label, None, shards, scratch)
        elif target in GT_COLUMNS:
            arrays = read_ground_truth(store, d, GT_COLUMNS[target], None, shards, scratch)
        else:
            arrays = {}
        crops = plan.fit_crops.get(d, {})
        for k in sorted(arrays)[: limit - len(out)]:
            out.append(prepare_reference(target, arrays[k], crops.get(k, Crop((0.0, 0.0, 1.0, 1.0), False)), size))
    return torch.stack(out) if out else None

