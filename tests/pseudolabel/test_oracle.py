"""The oracle profile: synthetic scenes take their depth / normals / semseg / det labels from ingest's exact
ground truth, photos still go through the tiny models, lineage says which is which."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fourm_core import ArtifactStore, DatasetConfig
from fourm_core.image_decode import decode_image
from fourm_core.label_codec import decode_label, npy_decode
from fourm_core.units import UnitStatus

ORACLE_LABELERS = ["depth", "normals", "semseg", "detection"]
LABELS = {"depth": "depth", "normals": "normal", "semseg": "semseg", "detection": "det"}
# small inputs keep the tiny models fast; threshold 0 so the random detector's boxes exist on the photo
SETTINGS = {"semseg": {"short_side": 64, "max_side": 128}, "detection": {"threshold": 0.0, "input_size": 64}}


def _config(profile: str) -> DatasetConfig:
    # shard 0: 3 scenes + 1 photo; shard 1: 4 photos (its ground_truth part has no rows)
    return DatasetConfig(name="scenes", sources=[{"kind": "synthetic", "n_samples": 3, "seed": 2, "size": 64},
                                                 {"kind": "skimage_photos"}],
                         ingest={"shard_size": 4, "shorter_side": 64},
                         pseudolabel={"runner": "local", "profile": profile, "labelers": ORACLE_LABELERS,
                                      "settings": SETTINGS})


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> ArtifactStore:
    """Ingested shards 0-1 (images + ground_truth), pseudolabelled with the oracle profile."""
    from ingest_stage.stage import run_shard as ingest
    from pseudolabel.stage import run_shard

    store = ArtifactStore(str(tmp_path_factory.mktemp("oracle")))
    for shard in (0, 1):
        ingest(store, _config("oracle"), shard)
        assert all(r.status is UnitStatus.DONE for r in run_shard(store, _config("oracle"), shard))
    return store


def _rows(store: ArtifactStore, artifact: str, shard: int) -> dict[str, dict]:
    return {r["sample_key"]: r for r in store.read_table("scenes", artifact, shard).to_pylist()}


def test_scene_labels_are_the_ground_truth_in_the_model_path_format(scenes):
    gt = _rows(scenes, "ground_truth", 0)
    assert len(gt) == 3
    labels = {lab: _rows(scenes, f"labels/{lab}", 0) for lab in LABELS.values()}
    for key, g in gt.items():
        depth = decode_label("depth", labels["depth"][key])
        assert np.array_equal(depth, npy_decode(g["depth"]).astype(np.float16).astype(np.float32))
        normal = decode_label("normal", labels["normal"][key])
        # PNG of round((n + 1) * 127.5): at most half a step per channel, i.e. < 1 degree
        assert np.abs(normal - npy_decode(g["normal"])).max() < 1.5 / 127.5
        assert np.array_equal(decode_label("semseg", labels["semseg"][key]), npy_decode(g["semseg"]))
        det = json.loads(labels["det"][key]["det"])["boxes"]
        truth = json.loads(g["boxes"])
        assert truth and [(b["xyxy"], b["class_name"], b["score"]) for b in det] == \
            [(list(map(float, b["xyxy"])), b["class"], 1.0) for b in truth]
        assert labels["det"][key]["n_coco_instances"] == len(truth)


def test_the_photo_still_gets_the_tiny_models_labels(scenes):
    from pseudolabel.config import pseudolabel_config
    from pseudolabel.registry import labeler_class
    from pseudolabel.spec import Batch

    images = _rows(scenes, "images", 0)
    (photo,) = [k for k in images if k.startswith("skimage-")]
    rgb = decode_image(images[photo]["image"])
    cfg = pseudolabel_config(_config("tiny"))
    for name, label in LABELS.items():
        lab = labeler_class(name)(cfg.settings_for(name), available=frozenset(LABELS.values()))
        lab.setup()
        (expected,) = lab.label_batch(Batch([photo], [rgb], [None]))
        stored = _rows(scenes, f"labels/{label}", 0)[photo]
        assert {k: stored[k] for k in expected[label]} == expected[label], name


def test_lineage_records_the_oracle_and_its_ground_truth_input(scenes, tmp_path):
    import shutil

    from fourm_core.lineage import describe, lineage
    from pseudolabel.stage import run_shard

    gt = scenes.read_manifest("scenes", "ground_truth", 0)
    for label in LABELS.values():
        m = scenes.read_manifest("scenes", f"labels/{label}", 0)
        assert m.ingredients.model.id.endswith("+oracle:ground_truth") and m.ingredients.model.source == "tiny"
        assert m.ingredients.config["oracle"] is True
        assert [(i.artifact, i.digest) for i in m.ingredients.inputs if i.artifact == "ground_truth"] == \
            [("ground_truth", gt.digest)]
        assert m.stats["from_ground_truth"] == 3 and m.stats["labeled"] == 4
    text = "\n".join(describe(lineage(scenes, "scenes", "labels/depth", 0)))
    assert "depth:tiny+oracle:ground_truth" in text and "scenes/ground_truth shard 0" in text
    # the oracle's units are cached; the tiny profile does not reuse them on a shard with ground truth (a copy
    # of the store, so the other tests keep the oracle's labels)
    assert {r.status for r in run_shard(scenes, _config("oracle"), 0)} == {UnitStatus.CACHED}
    copy = ArtifactStore(str(shutil.copytree(scenes.root, tmp_path / "copy")))
    assert [r.status for r in run_shard(copy, _config("tiny"), 0, labelers=["depth"])] == [UnitStatus.DONE]
    assert copy.read_manifest("scenes", "labels/depth", 0).ingredients.model.id == "depth:tiny"


def test_a_shard_without_ground_truth_is_the_tiny_profile(scenes):
    from pseudolabel.stage import run_shard

    assert scenes.read_manifest("scenes", "ground_truth", 1).rows == 0
    for label in LABELS.values():
        m = scenes.read_manifest("scenes", f"labels/{label}", 1)
        assert m.ingredients.model.id.endswith(":tiny") and m.ingredients.config["oracle"] is False
        assert "ground_truth" not in {i.artifact for i in m.ingredients.inputs}
        assert "from_ground_truth" not in m.stats and m.rows == 4
    # same settings, same inputs, same model: the tiny profile finds every unit cached
    assert {r.status for r in run_shard(scenes, _config("tiny"), 1)} == {UnitStatus.CACHED}


def test_oracle_is_a_setting_only_of_labelers_with_ground_truth():
    from fourm_core.config import ConfigError
    from pseudolabel.config import pseudolabel_config

    cfg = DatasetConfig(name="x", sources=[{"kind": "synthetic"}],
                        pseudolabel={"labelers": ["clip"], "settings": {"clip": {"oracle": True}}})
    with pytest.raises(ConfigError, match="oracle"):
        pseudolabel_config(cfg)


def test_bad_ground_truth_is_a_sample_error_naming_it():
    from fourm_core.label_codec import npy_encode
    from pseudolabel.registry import labeler_class
    from pseudolabel.spec import SampleFailure

    depth = labeler_class("depth")(labeler_class("depth").Settings(model="tiny", oracle=True))
    with pytest.raises(SampleFailure, match="ground_truth depth is \\(4, 5\\)") as err:
        depth.oracle_label({"depth": npy_encode(np.ones((4, 5), np.float32)), "height": 4, "width": 6})
    assert err.value.reason == "oracle_shape"
    det = labeler_class("detection")(labeler_class("detection").Settings(model="tiny", oracle=True))
    with pytest.raises(SampleFailure) as err:
        det.oracle_label({"boxes": json.dumps([{"xyxy": [0.5, 0, 0.1, 1], "class": "cup"}])})  # x0 > x1
    assert err.value.reason == "oracle_boxes"
