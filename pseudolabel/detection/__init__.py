"""COCO-80 object detection labeler core (4M ``det`` modality) on transformers' detection models.

Public API: :func:`detect`, :func:`build_detector`, :func:`load_detector`, :func:`save_detector`,
:class:`Detector`; post-processing :func:`to_detections`; label mapping :func:`coco_index_map`; box
transforms (:mod:`.boxes`); metadata :func:`n_coco_instances`, :func:`coco_instance_diversity`.
"""

from pseudolabel.detection.boxes import crop_boxes, hflip_boxes, transform_detections
from pseudolabel.detection.detector import (
    Detector,
    build_detector,
    detect,
    load_detector,
    save_detector,
    with_input_size,
)
from pseudolabel.detection.families import DEFAULT_FAMILY, FAMILIES, Family, get_family
from pseudolabel.detection.labels import coco_index_map, normalise_name
from pseudolabel.detection.metadata import coco_instance_diversity, n_coco_instances
from pseudolabel.detection.postprocess import SCORE_THRESHOLD, from_scored_boxes, to_detections

__all__ = [
    "DEFAULT_FAMILY", "FAMILIES", "SCORE_THRESHOLD", "Detector", "Family", "build_detector", "coco_index_map",
    "coco_instance_diversity", "crop_boxes", "detect", "from_scored_boxes", "get_family", "hflip_boxes",
    "load_detector", "n_coco_instances", "normalise_name", "save_detector", "to_detections", "transform_detections",
    "with_input_size",
]
