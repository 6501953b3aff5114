"""SAM instances/edges, detection boxes and human poses as labelers of the framework (tiny profiles)."""

import numpy as np
import pytest

from pseudolabel import codecs
from pseudolabel.registry import labeler_class
from pseudolabel.spec import Batch, SampleFailure
from pseudolabel.testing import photo, synthetic_image

# Random tiny weights: relaxed SAM thresholds and a zero score threshold so that there is something to store.
SAM = dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.6, stability_score_offset=0.5)
DET = dict(threshold=0.0, max_detections=5, input_size=128)


@pytest.fixture(scope="module")
def batch():
    return Batch(["a", "b"], [photo("chelsea", 96), synthetic_image(3, 80)], ["a cat", "shapes"])


def _labeler(name, tmp_path, **settings):
    """The tiny model saved to a directory and loaded back through the real loading path."""
    cls = labeler_class(name)
    path = str(tmp_path / name)
    cls().save(cls().seeded_tiny(), path)
    lab = cls(cls.Settings(model=path, **settings))
    assert lab.model_ref().id == path and len(lab.model_ref().digest) == 64
    lab.setup()
    mem = cls(cls.Settings(model="tiny", **settings))
    mem.setup()
    return lab, mem


def test_sam_instances_round_trip_and_edges_are_canny_of_the_instance_map(batch, tmp_path):
    from pseudolabel.labelers.sam import instance_masks
    from pseudolabel.sam.edges import render_instance_map, sam_edges

    lab, mem = _labeler("sam", tmp_path, **SAM)
    out = lab.label_batch(batch)
    assert out == mem.label_batch(batch)
    for rgb, res in zip(batch.rgb, out):
        inst, edges = res["sam_instance"], codecs.png_decode(res["sam_edge"]["edges"])
        masks = np.stack(instance_masks(inst))
        assert inst["n_instances"] == len(masks) > 0 and masks.shape[1:] == rgb.shape[:2]
        assert [int(m.sum()) for m in masks] == [i["area"] for i in inst["instances"]]
        for m, i in zip(masks, inst["instances"]):  # stored boxes are the inclusive extents of the masks
            ys, xs = np.nonzero(m)
            assert i["bbox"] == pytest.approx([xs.min(), ys.min(), xs.max(), ys.max()])
        assert np.array_equal(edges, sam_edges(render_instance_map(masks)))


def test_sam_low_resolution_edges_align_with_the_image(batch):
    cls = labeler_class("sam")
    lab = cls(cls.Settings(model="tiny", output_size=48, **SAM))
    lab.setup()
    res = lab.label_batch(batch)[0]
    assert res["sam_instance"]["mask_width"] == 48
    assert codecs.png_decode(res["sam_edge"]["edges"]).shape == batch.rgb[0].shape[:2]


def test_detection_boxes_in_coco80_and_counts(batch, tmp_path):
    from fourm_core.structured import Detections

    lab, mem = _labeler("detection", tmp_path, **DET)
    out = lab.label_batch(batch)
    assert out == mem.label_batch(batch)
    for res in out:
        dets = Detections.model_validate_json(res["det"]["det"])
        assert 0 < len(dets.boxes) <= 5 and res["det"]["n_coco_instances"] == len(dets.boxes)
        assert res["det"]["coco_instance_diversity"] == len({b.class_name for b in dets.boxes})
        assert all(0 <= v <= 1 for b in dets.boxes for v in b.xyxy)


def test_default_threshold_keeps_only_confident_boxes(batch):
    cls = labeler_class("detection")
    lab = cls(cls.Settings(model="tiny", input_size=128))
    lab.setup()
    assert (lab.settings.threshold, lab.settings.person_threshold) == (0.6, 0.5)  # 4M's boxes, 4D-Humans' persons
    assert lab.detector.threshold == 0.5  # candidates down to the lower one; the labeler keeps the rest apart
    from fourm_core.structured import Detections

    for res in lab.label_batch(batch):  # random weights stay far below 0.5
        assert res["det"]["n_coco_instances"] == 0
        assert Detections.model_validate_json(res["det"]["det"]).boxes == []


def _det(*boxes):
    from fourm_core.structured import Detections

    dets = Detections.model_validate({"boxes": [{"xyxy": xyxy, "class_name": c, "score": 0.9} for c, xyxy in boxes]})
    return {"det": dets.model_dump_json()}


def test_poses_per_person_box_none_without_people_and_missing_boxes_fail_the_sample(tmp_path):
    from tokenize_stage.text.serialise import human_poses as serialiser
    from fourm_core.structured import HumanPoses

    lab, mem = _labeler("human_poses", tmp_path)
    imgs = [photo("astronaut", 96), photo("chelsea", 96), synthetic_image(1, 64)]
    b = Batch(["p", "q", "r"], imgs, [None] * 3,
              deps={"det": [_det(("person", [0.1, 0.1, 0.6, 0.9]), ("cat", [0, 0, 1, 1])), _det(("cat", [0, 0, 1, 1])),
                            None]})
    out = lab.label_batch(b)
    assert out[:2] == mem.label_batch(b)[:2]
    person, nobody, missing = out
    assert person["human_poses"]["n_humans"] == 1
    assert person["human_poses"]["bbox"][0] == pytest.approx([0.1, 0.1, 0.6, 0.9])
    assert len(person["human_poses"]["body_pose"][0]) == 207 and len(person["human_poses"]["betas"][0]) == 10
    assert nobody["human_poses"]["n_humans"] == 0 and nobody["human_poses"]["bbox"] == []
    assert serialiser.serialise(HumanPoses(persons=[])) == "none"
    assert isinstance(missing, SampleFailure) and missing.reason == "missing_det"


def test_convert_sam_turns_a_released_style_pth_into_a_labeler_model_dir(tmp_path, batch):
    import torch

    from pseudolabel.__main__ import main
    from pseudolabel.sam.model import build_sam

    pth = tmp_path / "sam_tiny.pth"
    torch.save(build_sam("tiny").state_dict(), pth)  # the official checkpoints are plain state dicts
    assert main(["convert-sam", str(pth), str(tmp_path / "sam")]) == 0
    cls = labeler_class("sam")
    lab, mem = cls(cls.Settings(model=str(tmp_path / "sam"), **SAM)), cls(cls.Settings(model="tiny", **SAM))
    lab.setup(), mem.setup()
    assert lab.label_batch(batch) == mem.label_batch(batch)
