"""Tiny random-weight detectors end to end through the real code path: build -> save (safetensors) -> load
-> detect. Random weights rarely reach the 0.6 threshold, so these run with threshold 0 to check shapes,
types and determinism; the threshold itself is tested in test_postprocess.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fourm_core.coco import COCO_THING_CLASSES
from pseudolabel.detection import FAMILIES, build_detector, detect, load_detector, save_detector
from tokenize_stage.text.serialise import det
from fourm_core.structured import Detections

from .conftest import small


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_tiny_detector_round_trip_and_outputs(family, images, tmp_path):
    d = small(build_detector(family, "tiny", threshold=0.0, max_detections=10))
    first = detect(d, images)
    save_detector(d, tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))  # safetensors only
    loaded = small(load_detector(tmp_path, threshold=0.0, max_detections=10))
    assert loaded.family.name == family
    assert type(loaded.model) is type(d.model)
    again = detect(loaded, images)
    assert again == first  # identical weights, identical outputs

    assert len(first) == len(images)
    for dets in first:
        assert isinstance(dets, Detections)
        assert 1 <= len(dets.boxes) <= 10
        scores = [b.score for b in dets.boxes]
        assert scores == sorted(scores, reverse=True)
        for b in dets.boxes:
            assert b.class_name in COCO_THING_CLASSES
            x0, y0, x1, y1 = b.xyxy
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
        det.parse(det.serialise(dets, score_threshold=0.0))


def test_batching_does_not_change_results(images):
    # images 0 and 2 share a shape and are batched together; alone, the result must agree up to float
    # summation order (RT-DETR: the tiny model's scores are well separated, so the order is stable)
    d = small(build_detector("rt_detr", "tiny", threshold=0.0, max_detections=10))
    batched, alone = detect(d, images)[2], detect(d, [images[2]])[0]
    assert [b.class_name for b in alone.boxes] == [b.class_name for b in batched.boxes]
    for a, b in zip(alone.boxes, batched.boxes):
        assert a.xyxy == pytest.approx(b.xyxy, abs=1e-5) and a.score == pytest.approx(b.score, abs=1e-5)


def _scores_fixed(detector, scores: dict[int, float]):
    """The detector's final class head made input-independent: every query scores ``scores[c]`` for class c (and
    ~0 for the others), so boxes clear or miss a threshold by construction."""
    import torch

    head = detector.model.model.decoder.class_embed[-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-20.0)
        for c, p in scores.items():
            head.bias[c] = float(torch.logit(torch.tensor(p)))
    return detector


def test_default_threshold_applies(images):
    """Boxes scoring 0.7 are kept and boxes scoring 0.5 dropped at the default 0.6; threshold 0 keeps both."""
    person, car = COCO_THING_CLASSES.index("person"), COCO_THING_CLASSES.index("car")
    d = _scores_fixed(small(build_detector("rt_detr", "tiny")), {person: 0.7, car: 0.5})
    assert d.threshold == 0.6
    for dets in detect(d, images):
        assert dets.boxes and {b.class_name for b in dets.boxes} == {"person"}
        assert all(b.score == pytest.approx(0.7, abs=1e-5) for b in dets.boxes)
    low = _scores_fixed(small(build_detector("rt_detr", "tiny", threshold=0.0, max_detections=300)),
                        {person: 0.7, car: 0.5})
    for dets in detect(low, images):
        cars = [b.score for b in dets.boxes if b.class_name == "car"]
        assert cars and all(s == pytest.approx(0.5, abs=1e-5) for s in cars)


def test_saved_config_has_coco80_labels(tmp_path):
    d = build_detector("detr", "tiny")
    save_detector(d, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert [cfg["id2label"][str(i)] for i in range(80)] == list(COCO_THING_CLASSES)
    assert d.index_map == {i: i for i in range(80)}


def test_detect_rejects_bad_images():
    d = build_detector("rt_detr", "tiny")
    with pytest.raises(ValueError, match="uint8"):
        detect(d, [np.zeros((10, 10, 3), np.float32)])


def test_labeler_keeps_persons_down_to_the_4d_humans_threshold(images):
    """Persons scoring 0.55 are stored (4D-Humans crops persons > 0.5), cars at 0.55 are not (< 0.6); the counts
    and the det tokens still use 0.6."""
    from pseudolabel.registry import labeler_class
    from pseudolabel.spec import Batch

    cls = labeler_class("detection")
    lab = cls(cls.Settings(model="tiny", family="rt_detr", input_size=128))
    lab.setup()
    person, car, dog = (COCO_THING_CLASSES.index(n) for n in ("person", "car", "dog"))
    _scores_fixed(lab.detector, {person: 0.55, car: 0.55, dog: 0.7})
    rows = lab.label_batch(Batch(["a", "b", "c"], images, [None] * 3))
    for row in rows:
        dets = Detections.model_validate_json(row["det"]["det"])
        assert {b.class_name for b in dets.boxes} == {"person", "dog"}
        assert row["det"]["n_coco_instances"] == sum(b.class_name == "dog" for b in dets.boxes)
        assert "person" not in det.serialise(dets, score_threshold=0.6)
