"""Raw detector outputs -> :class:`Detections` in the COCO-80 label space (numpy, one image at a time).

Kept separate from the model so that thresholding, label mapping, box conversion and ordering can be
tested on constructed logits (random-weight models almost never score >= 0.6).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np

from fourm_core.coco import COCO_THING_CLASSES
from fourm_core.structured import Box, Detections

SCORE_THRESHOLD = 0.6  # 4M-FACTS §1: ViTDet boxes with score >= 0.6


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) centre/size -> (N, 4) corners, same units."""
    cx, cy, w, h = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def class_scores(logits: np.ndarray, activation: Literal["softmax", "sigmoid"]) -> np.ndarray:
    """(Q, C') logits -> (Q, C) per-class probabilities; softmax drops the trailing no-object column."""
    logits = logits.astype(np.float64)
    if activation == "softmax":
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True))[:, :-1]
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    raise ValueError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}")


def select(scores: np.ndarray, activation: Literal["softmax", "sigmoid"], max_detections: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate (query, class, score) triples before thresholding, best first.

    softmax: each query's best class (DETR inference). sigmoid: the top ``max_detections`` (query, class)
    pairs over all queries x classes, so one query may give several classes (RT-DETR / Deformable-DETR
    inference).
    """
    q, c = scores.shape
    if activation == "softmax":
        cls = scores.argmax(axis=1)
        sc = scores[np.arange(q), cls]
        qi = np.arange(q)
    else:
        flat = scores.reshape(-1)
        qi, cls = np.divmod(np.arange(flat.size), c)
        sc = flat
    order = np.lexsort((qi, -sc))[:max_detections]  # score descending, ties by query index (deterministic)
    return qi[order], cls[order], sc[order]


def to_detections(logits: np.ndarray, boxes_cxcywh: np.ndarray, index_map: Mapping[int, int], *,
                  activation: Literal["softmax", "sigmoid"], threshold: float = SCORE_THRESHOLD,
                  max_detections: int = 100) -> Detections:
    """One image's head outputs -> Detections, boxes ordered by score (descending).

    logits: (Q, C') raw class logits; boxes_cxcywh: (Q, 4) normalised (cx, cy, w, h) relative to the image
    the model saw (= the original image, since we resize the whole image without padding);
    index_map: model class id -> COCO-80 index (labels.coco_index_map). Classes outside COCO-80 and boxes
    with zero area after clipping to [0, 1] are dropped; scores >= ``threshold`` are kept.
    """
    scores = class_scores(np.asarray(logits), activation)
    qi, cls, sc = select(scores, activation, max_detections)
    xyxy = np.clip(cxcywh_to_xyxy(np.asarray(boxes_cxcywh, dtype=np.float64)), 0.0, 1.0)
    out: list[Box] = []
    for q, c, s in zip(qi.tolist(), cls.tolist(), sc.tolist()):
        if s < threshold:
            break  # sorted by score
        coco = index_map.get(c)
        if coco is None:
            continue
        x0, y0, x1, y1 = xyxy[q].tolist()
        if x1 <= x0 or y1 <= y0:
            continue
        out.append(Box(xyxy=(x0, y0, x1, y1), class_name=COCO_THING_CLASSES[coco], score=s))
    return Detections(boxes=out)


def from_scored_boxes(boxes_xyxy_px: np.ndarray, scores: np.ndarray, labels: np.ndarray, width: int, height: int,
                      index_map: Mapping[int, int], threshold: float = SCORE_THRESHOLD) -> Detections:
    """Already-decoded detections (e.g. detectron2 ViTDet ``Instances``: ``pred_boxes`` (N, 4) xyxy pixels of the
    ``width x height`` image, ``scores`` (N,), ``pred_classes`` (N,)) -> the same Detections contract: normalised,
    clipped, COCO-80 names by ``index_map``, score >= threshold, ordered by score (descending)."""
    b = np.asarray(boxes_xyxy_px, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    lab = np.asarray(labels).reshape(-1)
    xyxy = np.clip(b / np.array([width, height, width, height], dtype=np.float64), 0.0, 1.0)
    out: list[Box] = []
    for k in np.lexsort((np.arange(len(s)), -s)).tolist():
        coco = index_map.get(int(lab[k]))
        x0, y0, x1, y1 = xyxy[k].tolist()
        if s[k] < threshold or coco is None or x1 <= x0 or y1 <= y0:
            continue
        out.append(Box(xyxy=(x0, y0, x1, y1), class_name=COCO_THING_CLASSES[coco], score=float(s[k])))
    return Detections(boxes=out)
