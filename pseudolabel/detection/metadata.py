"""Count-based metadata from detections (4M-FACTS §4: 7 n_coco_instances, 8 coco_instance_diversity)."""

from __future__ import annotations

from fourm_core.structured import Detections
from pseudolabel.detection.postprocess import SCORE_THRESHOLD


def _kept(dets: Detections, threshold: float):
    # parsed boxes have no score; they were kept when serialised
    return [b for b in dets.boxes if b.score is None or b.score >= threshold]


def n_coco_instances(dets: Detections, threshold: float = SCORE_THRESHOLD) -> int:
    """COCO clutter: number of boxes with score >= threshold."""
    return len(_kept(dets, threshold))


def coco_instance_diversity(dets: Detections, threshold: float = SCORE_THRESHOLD) -> int:
    """COCO instance diversity: number of distinct classes among boxes with score >= threshold."""
    return len({b.class_name for b in _kept(dets, threshold)})
