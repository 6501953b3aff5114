"""Detector post-processing on constructed logits/boxes: threshold, label mapping, normalisation, order."""

from __future__ import annotations

import numpy as np
import pytest

from fourm_core.coco import COCO_THING_CLASSES
from pseudolabel.detection import coco_index_map, n_coco_instances, coco_instance_diversity, to_detections
from pseudolabel.detection.labels import coco80_id2label
from tokenize_stage.text.serialise import det
from fourm_core.structured import Box, Detections

COCO80 = coco_index_map(coco80_id2label())


def softmax_logits(probs: list[dict[int, float]], n_classes: int) -> np.ndarray:
    """Logits whose softmax over n_classes + 1 (no-object last) gives the wanted probabilities; the rest of
    the mass goes to no-object."""
    out = np.full((len(probs), n_classes + 1), -np.inf)
    for q, p in enumerate(probs):
        for c, v in p.items():
            out[q, c] = np.log(v)
        out[q, -1] = np.log(1.0 - sum(p.values()))
    return np.nan_to_num(out, neginf=-1e4)


def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


BOXES = np.array([[0.5, 0.5, 0.2, 0.4],  # cx, cy, w, h
                  [0.1, 0.2, 0.1, 0.1],
                  [0.95, 0.9, 0.3, 0.4],  # sticks out right and bottom: clipped
                  [0.3, 0.3, 0.1, 0.1]])


def test_softmax_threshold_order_and_normalisation():
    logits = softmax_logits([{0: 0.7}, {16: 0.9}, {2: 0.6}, {5: 0.59}], 80)
    dets = to_detections(logits, BOXES, COCO80, activation="softmax")
    assert [b.class_name for b in dets.boxes] == ["dog", "person", "car"]  # 0.9, 0.7, 0.6 (>= kept); 0.59 dropped
    assert [round(b.score, 6) for b in dets.boxes] == [0.9, 0.7, 0.6]
    assert dets.boxes[0].xyxy == pytest.approx((0.05, 0.15, 0.15, 0.25))
    assert dets.boxes[1].xyxy == pytest.approx((0.4, 0.3, 0.6, 0.7))
    assert dets.boxes[2].xyxy == pytest.approx((0.8, 0.7, 1.0, 1.0))  # clipped to the image


def test_threshold_is_configurable_and_empty_case():
    logits = softmax_logits([{0: 0.7}, {16: 0.9}, {2: 0.6}, {5: 0.59}], 80)
    assert len(to_detections(logits, BOXES, COCO80, activation="softmax", threshold=0.5).boxes) == 4
    empty = to_detections(logits, BOXES, COCO80, activation="softmax", threshold=0.95)
    assert empty == Detections(boxes=[])
    assert det.serialise(empty) == ""
    assert n_coco_instances(empty) == 0 and coco_instance_diversity(empty) == 0


def test_sigmoid_allows_several_classes_per_query_and_caps_count():
    logits = np.full((4, 80), -10.0)
    logits[0, 0] = logit(0.8)  # person
    logits[0, 26] = logit(0.65)  # handbag, same query
    logits[3, 0] = logit(0.95)
    dets = to_detections(logits, BOXES, COCO80, activation="sigmoid")
    assert [(b.class_name, round(b.score, 6)) for b in dets.boxes] == [("person", 0.95), ("person", 0.8),
                                                                        ("handbag", 0.65)]
    assert dets.boxes[1].xyxy == dets.boxes[2].xyxy
    assert len(to_detections(logits, BOXES, COCO80, activation="sigmoid", max_detections=2).boxes) == 2
    assert n_coco_instances(dets) == 3 and coco_instance_diversity(dets) == 2


def test_label_mapping_by_name_detr_style_ids():
    # DETR numbers COCO by the original 91 category ids with "N/A" gaps; a VOC-style checkpoint spells
    # classes differently; unknown classes map to nothing
    id2label = {0: "N/A", 1: "person", 2: "bicycle", 3: "car", 4: "Motorbike", 12: "N/A", 13: "stop_sign",
                72: "tvmonitor", 90: "toothbrush", 91: "zebra crossing"}
    m = coco_index_map(id2label)
    names = {k: COCO_THING_CLASSES[v] for k, v in m.items()}
    assert names == {1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 13: "stop sign", 72: "tv",
                     90: "toothbrush"}
    logits = softmax_logits([{72: 0.9}, {91: 0.95}, {4: 0.8}, {}], 92)
    dets = to_detections(logits, BOXES, m, activation="softmax")
    assert [b.class_name for b in dets.boxes] == ["tv", "motorcycle"]  # the unmapped class is dropped


def test_label_mapping_rejects_ambiguous_or_foreign_label_spaces():
    with pytest.raises(ValueError, match="both map"):
        coco_index_map({0: "tv", 1: "tvmonitor"})
    with pytest.raises(ValueError, match="no class"):
        coco_index_map({0: "LABEL_0", 1: "LABEL_1"})


def test_degenerate_boxes_are_dropped():
    boxes = np.array([[1.2, 0.5, 0.2, 0.2], [0.5, 0.5, 0.0, 0.3]])  # fully outside; zero width
    logits = softmax_logits([{0: 0.9}, {0: 0.9}], 80)
    assert to_detections(logits, boxes, COCO80, activation="softmax").boxes == []


def test_metadata_counts_use_threshold_and_ignore_missing_scores():
    dets = Detections(boxes=[Box(xyxy=(0, 0, 0.5, 0.5), class_name="dog", score=0.9),
                             Box(xyxy=(0, 0, 0.5, 0.5), class_name="dog", score=0.7),
                             Box(xyxy=(0, 0, 0.5, 0.5), class_name="cat", score=0.5),
                             Box(xyxy=(0, 0, 0.5, 0.5), class_name="cup", score=None)])
    assert n_coco_instances(dets) == 3
    assert coco_instance_diversity(dets) == 2


def test_pixel_box_adapter_for_vitdet_style_outputs():
    # detectron2 Instances: xyxy pixels of the input image, scores, contiguous class ids with its own names
    thing_classes = list(COCO_THING_CLASSES)
    m = coco_index_map(dict(enumerate(thing_classes)))
    from pseudolabel.detection import from_scored_boxes

    dets = from_scored_boxes(np.array([[64, 48, 320, 480], [0, 0, 700, 100], [10, 10, 20, 20]]),
                             np.array([0.7, 0.99, 0.3]), np.array([0, 62, 5]), width=640, height=480, index_map=m)
    assert [(b.class_name, b.score) for b in dets.boxes] == [("tv", 0.99), ("person", 0.7)]
    assert dets.boxes[0].xyxy == pytest.approx((0.0, 0.0, 1.0, 100 / 480))
    assert dets.boxes[1].xyxy == pytest.approx((0.1, 0.1, 0.5, 1.0))
