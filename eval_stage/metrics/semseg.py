"""Semantic segmentation mIoU over a label space with an ignore index (4M-FACTS §8: 133 COCO panoptic classes).

From the confusion matrix C (rows ground truth, columns prediction) accumulated over the whole
dataset: IoU_c = C_cc / (Σ_j C_cj + Σ_i C_ic − C_cc), and mIoU is the mean over the classes that
occur in the ground truth or the prediction (classes with an empty union are left out, the
torchmetrics / mmseg convention). Ground-truth pixels equal to ``ignore_index`` are dropped;
predictions outside [0, num_classes) count as wrong for their ground-truth class.
"""

from __future__ import annotations

import torch


def confusion_matrix(pred: torch.Tensor, gt: torch.Tensor, num_classes: int, ignore_index: int | None = None
                     ) -> torch.Tensor:
    """pred, gt (...) int -> (num_classes, num_classes + 1) int64 counts; the last column collects
    predictions outside the label space."""
    pred, gt = pred.reshape(-1).long(), gt.reshape(-1).long()
    keep = (gt >= 0) & (gt < num_classes)
    if ignore_index is not None:
        keep &= gt != ignore_index
    pred, gt = pred[keep], gt[keep]
    pred = torch.where((pred >= 0) & (pred < num_classes), pred, torch.full_like(pred, num_classes))
    idx = gt * (num_classes + 1) + pred
    return torch.bincount(idx, minlength=num_classes * (num_classes + 1)).view(num_classes, num_classes + 1)


def miou(pred: torch.Tensor | None = None, gt: torch.Tensor | None = None, num_classes: int | None = None,
         ignore_index: int | None = None, confusion: torch.Tensor | None = None) -> dict[str, object]:
    """mIoU from predictions or from an accumulated confusion matrix.

    -> {"miou": float, "iou": (num_classes,) tensor with NaN for absent classes, "pixel_acc": float}.
    """
    if confusion is None:
        assert pred is not None and gt is not None and num_classes is not None
        confusion = confusion_matrix(pred, gt, num_classes, ignore_index)
    C = confusion.double()
    K = C.shape[0]
    tp = C.diagonal()[:K] if C.shape[1] == K else C[:, :K].diagonal()
    gt_count = C.sum(1)
    pred_count = C[:, :K].sum(0)
    union = gt_count + pred_count - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    present = union > 0
    return {
        "miou": float(iou[present].mean()) if present.any() else float("nan"),
        "iou": iou,
        "pixel_acc": float(tp.sum() / gt_count.sum().clamp(min=1)),
    }
