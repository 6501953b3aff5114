"""Evaluation metrics (issue 7 point 4, 4M-FACTS §8), one module per family.

Every function takes batched torch tensors and returns Python floats or small tensors; none of them
needs a model, so they also score tokenizer reconstructions (the "tokenizer bound").
"""

from .boxes import box_ap, box_iou
from .depth import align_scale_shift, depth_metrics
from .ensemble import ensemble_mean, ensemble_normals, ensemble_vote
from .image import l1_error, mask_iou, psnr
from .knn import knn_classify, knn_topk_accuracy
from .normals import angular_error_deg, normal_metrics
from .semseg import confusion_matrix, miou
from .tokens import masked_token_metrics

__all__ = [
    "align_scale_shift", "angular_error_deg", "box_ap", "box_iou", "confusion_matrix", "depth_metrics",
    "ensemble_mean", "ensemble_normals", "ensemble_vote", "knn_classify", "knn_topk_accuracy", "l1_error",
    "mask_iou", "masked_token_metrics", "miou", "normal_metrics", "psnr",
]
