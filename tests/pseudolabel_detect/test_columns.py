"""The proposed Parquet columns round-trip through a real Parquet file."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from pseudolabel.detection import columns as det_columns
from pseudolabel.humans import HumanPosesRaw, PersonRaw
from pseudolabel.humans import columns as pose_columns
from fourm_core.structured import Box, Detections


def test_det_columns_round_trip(tmp_path):
    rows = [Detections(), Detections(boxes=[Box(xyxy=(0.1, 0.2, 0.3, 0.4), class_name="dog", score=0.8),
                                            Box(xyxy=(0.0, 0.0, 1.0, 1.0), class_name="dog", score=0.61)])]
    pq.write_table(det_columns.to_table(rows), tmp_path / "det.parquet")
    t = pq.read_table(tmp_path / "det.parquet")
    assert det_columns.from_table(t) == rows
    assert t.column("n_coco_instances").to_pylist() == [0, 2]
    assert t.column("coco_instance_diversity").to_pylist() == [0, 1]


def test_pose_columns_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    person = PersonRaw(bbox=(0.1, 0.2, 0.5, 0.9), score=0.9, global_orient=np.eye(3).ravel(),
                       body_pose=rng.uniform(-1, 1, 207), betas=rng.uniform(-3, 3, 10), camera=(0.9, 0.1, -0.2))
    rows = [HumanPosesRaw(), HumanPosesRaw(persons=[person, person.model_copy(update={"score": None})])]
    pq.write_table(pose_columns.to_table(rows), tmp_path / "poses.parquet")
    back = pose_columns.from_table(pq.read_table(tmp_path / "poses.parquet"))
    assert back[0] == HumanPosesRaw()
    assert [p.score for p in back[1].persons] == [pytest.approx(0.9), None]
    for a, b in zip(back[1].persons, rows[1].persons):
        for k in pose_columns.VECTORS:
            assert np.allclose(getattr(a, k), getattr(b, k), atol=1e-6)  # stored as float32
