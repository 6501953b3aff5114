"""The stage in-process (runner: local): commits, caching, per-sample errors, unit failures."""

import pytest

from fourm_core.units import UnitStatus
from pseudolabel.stage import STAGE, PseudolabelUnitsFailed, run_shard

from .conftest import PLUGIN, dataset_config

CHEAP = ["canny", "color_palette", "depth", "normals", "semseg", "clip", "metadata"]


def _status(results):
    return {r.artifacts[0]: r.status for r in results}


def test_full_tiny_run_commits_every_label_then_caches(images_store, tmp_path):
    cfg = dataset_config(runner="local", profile="tiny")
    assert STAGE.plan_shards(images_store, cfg) == [0, 1]
    results = STAGE.run_shard(images_store, cfg, 0)
    assert all(r.status is UnitStatus.DONE for r in results)
    arts = images_store.artifacts("demo")
    for a in STAGE.artifacts:
        assert a in arts
        t = images_store.read_table("demo", a, 0)
        assert t.column("sample_key").to_pylist() == [f"s00-{i:03d}" for i in range(4)]
    m = images_store.read_manifest("demo", "labels/depth", 0)
    assert m.ingredients.model.id == "depth:tiny" and len(m.ingredients.model.digest) == 64
    # the unit's duration is its share of the shared pass (not the ~0 s of handing over its tables)
    assert m.timings.seconds >= m.stats["shard_pass_seconds"] / m.stats["labelers_in_pass"] > 0
    assert m.ingredients.inputs[0].artifact == "images"
    meta = images_store.read_manifest("demo", "labels/metadata", 0)
    assert {i.artifact for i in meta.ingredients.inputs} == {"images", "labels/semseg", "labels/depth", "labels/normal",
                                                             "labels/sam_instance", "labels/det", "labels/human_poses"}
    md = images_store.read_table("demo", "labels/metadata", 0).to_pylist()[0]
    sam = images_store.read_table("demo", "labels/sam_instance", 0).to_pylist()[0]
    poses = images_store.read_table("demo", "labels/human_poses", 0).to_pylist()[0]
    assert md["original_width"] == 192 and 0 <= md["objectness"] <= 1
    assert md["n_sam_instances"] == sam["n_instances"] and md["n_humans"] == poses["n_humans"]
    assert md["watermark_score"] is None  # no provider yet: stays null
    assert all(r.status is UnitStatus.CACHED for r in STAGE.run_shard(images_store, cfg, 0))
    # the orchestrator sees that from the index without dispatching the shard: the units it builds (input refs
    # from the index's columns) are the ones run_shard committed, shard 1 (not labelled) is not cached
    from fourm_core import ArtifactStore

    view = ArtifactStore(images_store.root_uri, use_index=True)
    cached = STAGE.cached_results(view, cfg, 0)
    assert cached is not None and {a for r in cached for a in r.artifacts} == set(STAGE.artifacts)
    assert [u.cache_key for u in STAGE.shard_units(view, cfg, 0)] == \
        [u.cache_key for u in STAGE.shard_units(images_store, cfg, 0)]
    assert not STAGE.shard_is_cached(view, cfg, 1)
    # what the Prefect tasks return names the same absolute files, from the index or from the manifests
    from_manifests = STAGE.cached_results(ArtifactStore(images_store.root_uri, use_index=False), cfg, 0)
    assert [r.summary()["uris"] for r in cached] == [r.summary()["uris"] for r in from_manifests]
    assert all(u.startswith(images_store.root + "/") for r in cached for u in r.summary()["uris"])

    from PIL import Image

    from pseudolabel.__main__ import main

    out = str(tmp_path / "sample.png")
    assert main(["show", "--dataset", "demo", "--root", images_store.root, "--sample", "s00-001", "--out", out]) == 0
    with Image.open(out) as im:
        assert im.size[0] > 1000 and im.size[1] > 600


def test_changed_config_or_digest_recomputes_only_that_labeler(images_store, tmp_path):
    from pseudolabel.registry import labeler_class

    clip_dir = str(tmp_path / "clip")
    cls = labeler_class("clip")
    cls().save(cls().seeded_tiny(), clip_dir)
    base = dict(runner="local", profile="tiny", labelers=CHEAP)
    run_shard(images_store, dataset_config(**base, settings={"clip": {"model": clip_dir}}), 0)
    digests = {a: images_store.read_manifest("demo", a, 0).digest for a in images_store.artifacts("demo")}

    changed = run_shard(images_store, dataset_config(**base, settings={"clip": {"model": clip_dir},
                                                                       "canny": {"low": 50}}), 0)
    st = _status(changed)
    assert st.pop("labels/canny_edge") is UnitStatus.DONE and set(st.values()) == {UnitStatus.CACHED}
    from fourm_core import ArtifactStore

    low = dataset_config(**base, settings={"clip": {"model": clip_dir}, "canny": {"low": 50}})
    assert STAGE.shard_is_cached(ArtifactStore(images_store.root_uri, use_index=True), low, 0)
    assert not STAGE.shard_is_cached(ArtifactStore(images_store.root_uri, use_index=True),
                                     dataset_config(**base, settings={"clip": {"model": clip_dir}, "canny": {"low": 60}}), 0)

    import torch
    model = cls().load_dir(clip_dir)
    with torch.no_grad():
        model.visual_projection.weight.mul_(2)  # new weights -> new digest
    cls().save(model, clip_dir)
    changed = run_shard(images_store, dataset_config(**base, settings={"clip": {"model": clip_dir},
                                                                       "canny": {"low": 50}}), 0)
    st = _status(changed)
    assert st.pop("labels/clip_features") is UnitStatus.DONE and set(st.values()) == {UnitStatus.CACHED}
    after = {a: images_store.read_manifest("demo", a, 0).digest for a in images_store.artifacts("demo")}
    assert {a for a in after if after[a] != digests.get(a)} == {"labels/canny_edge", "labels/clip_features"}


def test_a_raising_sample_goes_to_errors_and_the_shard_commits(images_store):
    cfg = dataset_config(runner="local", labelers=["faulty", "canny"], plugins=[PLUGIN],
                         settings={"faulty": {"fail_keys": ["s00-002"]}})
    results = run_shard(images_store, cfg, 0)
    assert all(r.status is UnitStatus.DONE for r in results)
    t = images_store.read_table("demo", "labels/faulty", 0)
    assert t.column("sample_key").to_pylist() == ["s00-000", "s00-001", "s00-003"]
    errs = images_store.read_errors("demo", "labels/faulty", 0).to_pylist()
    assert len(errs) == 1 and errs[0]["sample_key"] == "s00-002" and "boom" in errs[0]["detail"]
    assert images_store.read_table("demo", "labels/canny_edge", 0).num_rows == 4


def test_undecodable_image_is_a_sample_error(store):
    from pseudolabel.testing import commit_images, synthetic_image

    commit_images(store, "demo", 0, [("ok", synthetic_image(0, 32), "x"), ("bad", b"not an image", None)])
    run_shard(store, dataset_config(runner="local", labelers=["canny", "metadata"]), 0)
    for a in ("labels/canny_edge", "labels/metadata"):
        assert store.read_table("demo", a, 0).column("sample_key").to_pylist() == ["ok"]
        errs = store.read_errors("demo", a, 0).to_pylist()
        assert [e["reason"] for e in errs] == ["decode_error"]


def test_a_caption_only_pass_labels_samples_whose_image_does_not_decode(store, monkeypatch):
    # T5 reads captions only: its pass skips the JPEG decode, so an undecodable image costs it nothing
    import pseudolabel.runner as runner
    from pseudolabel.testing import commit_images, synthetic_image

    decoded = []
    real = runner.decode_image
    monkeypatch.setattr(runner, "decode_image", lambda data: (decoded.append(1), real(data))[1])
    commit_images(store, "demo", 0, [("ok", synthetic_image(0, 32), "a cat"), ("bad", b"not an image", "a dog")])
    run_shard(store, dataset_config(runner="local", profile="tiny", labelers=["t5"]), 0)
    assert store.read_table("demo", "labels/t5_caption", 0).column("sample_key").to_pylist() == ["ok", "bad"]
    assert store.read_errors("demo", "labels/t5_caption", 0).num_rows == 0 and decoded == []


def test_missing_model_fails_that_unit_with_the_path_and_others_commit(images_store, tmp_path):
    missing = str(tmp_path / "models" / "dpt-missing")
    cfg = dataset_config(runner="local", profile="tiny", labelers=["canny", "depth", "clip"],
                         settings={"depth": {"model": missing}})
    with pytest.raises(PseudolabelUnitsFailed, match="dpt-missing") as info:
        run_shard(images_store, cfg, 0)
    st = {r.artifacts[0]: r.status for r in info.value.results}
    assert st == {"labels/canny_edge": UnitStatus.DONE, "labels/depth": UnitStatus.FAILED,
                  "labels/clip_features": UnitStatus.DONE}
    failed = images_store.failed_shards("demo", "labels/depth")
    assert missing in failed[0]["error"]


def test_feature_subset_and_labeler_selection(images_store):
    cfg = dataset_config(runner="local", profile="tiny", labelers=["canny", "dinov2"], feature_subset={"every": 2})
    assert {r.artifacts[0] for r in run_shard(images_store, cfg, 1)} == {"labels/canny_edge"}  # shard 1: no features
    assert [r.artifacts for r in run_shard(images_store, cfg, 0, labelers=["dinov2"])] == [
        ["labels/dinov2_features", "labels/dinov2_global"]]
    from fourm_core import ConfigError

    with pytest.raises(ConfigError, match="unknown labeler 'nope'"):
        run_shard(images_store, dataset_config(labelers=["metadata", "nope"]), 0)
    with pytest.raises(ConfigError, match="batch_size"):  # a labeler's own settings are validated before work
        run_shard(images_store, dataset_config(labelers=["faulty"], plugins=[PLUGIN],
                                               settings={"faulty": {"batch_size": 0}}), 0)


def test_rerunning_only_sam_for_one_shard_touches_nothing_else(images_store):
    sam = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.6, "stability_score_offset": 0.5}
    cfg = dataset_config(runner="local", profile="tiny", labelers=["canny", "sam", "semseg", "metadata"],
                         settings={"sam": sam})
    for shard in (0, 1):
        run_shard(images_store, cfg, shard)

    def finished():
        return {(a, s): images_store.read_manifest("demo", a, s).timings.finished
                for a in images_store.artifacts("demo") if a != "images" for s in (0, 1)}

    before = finished()
    results = run_shard(images_store, cfg, 1, labelers=["sam"], force=True)
    assert {a for r in results for a in r.artifacts} == {"labels/sam_instance", "labels/sam_edge"}
    changed = {k for k, v in finished().items() if v != before[k]}
    assert changed == {("labels/sam_instance", 1), ("labels/sam_edge", 1)}


def test_viewer_draws_instances_boxes_and_persons(images_store, tmp_path):
    from PIL import Image

    from pseudolabel.viewer import render_sample, sample_panels

    sam = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.6, "stability_score_offset": 0.5}
    # the tiny RT-DETR's 80 random classes include persons (the tiny random ViTDet ranks the same classes first)
    det = {"family": "rt_detr", "threshold": 0.0, "max_detections": 80, "input_size": 128}
    cfg = dataset_config(runner="local", profile="tiny", labelers=["sam", "detection", "human_poses"],
                         settings={"sam": sam, "detection": det})
    results = run_shard(images_store, cfg, 0)
    assert {a for r in results for a in r.artifacts} == {"labels/sam_instance", "labels/sam_edge", "labels/det",
                                                         "labels/human_poses"}
    panels, _ = sample_panels(images_store, "demo", "s00-000")
    by_title = {title.split(" (")[0]: kw for title, _, kw in panels}
    assert {"SAM instances", "SAM edges", "boxes COCO-80", "human poses"} <= set(by_title)
    assert len(by_title["boxes COCO-80"]["overlays"]) > 0
    poses = images_store.read_table("demo", "labels/human_poses", 0).to_pylist()[0]
    assert len(by_title["human poses"]["overlays"]) == poses["n_humans"] > 0
    out = render_sample(images_store, "demo", "s00-000", str(tmp_path / "s.png"))
    with Image.open(out) as im:
        assert im.size[0] > 1000


def test_status_expects_raw_features_only_on_the_feature_subset():
    cfg = dataset_config(labelers=["canny", "dinov2", "metadata"], feature_subset={"shards": [0, 2]})
    assert STAGE.dataset_artifacts(cfg) == ("labels/canny_edge", "labels/dinov2_features", "labels/dinov2_global",
                                            "labels/metadata")
    assert STAGE.expected_shards(cfg, "labels/dinov2_features", [0, 1, 2, 3]) == [0, 2]
    assert STAGE.expected_shards(cfg, "labels/canny_edge", [0, 1, 2, 3]) == [0, 1, 2, 3]
