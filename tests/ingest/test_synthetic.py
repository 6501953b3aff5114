"""Synthetic scenes: determinism and exact, self-consistent ground truth."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

from fourm_core.coco import COCO_PANOPTIC_CLASSES
from ingest_stage import run_shard
from ingest_stage.synthetic import make_scene, render

ID = {name: i + 1 for i, name in enumerate(COCO_PANOPTIC_CLASSES)}  # stored ids are panoptic id + 1


def _rays_cam(scene, w, h):
    f = 0.5 * w / math.tan(scene.fov / 2)
    u = (np.arange(w) + 0.5 - w / 2) / f
    v = (np.arange(h) + 0.5 - h / 2) / f
    uu, vv = np.meshgrid(u, v)
    return np.stack([uu, vv, np.ones_like(uu)], axis=2)


@pytest.mark.parametrize("index", range(6))
def test_ground_truth_is_exact_and_consistent(index):
    scene = make_scene(7, index)
    w, h = 96, 72
    r = render(scene, w, h)
    assert r.rgb.shape == (h, w, 3) and r.rgb.dtype == np.uint8
    assert r.depth.shape == (h, w) and np.all(np.isfinite(r.depth)) and r.depth.min() > 0
    assert np.allclose(np.linalg.norm(r.normal, axis=2), 1.0, atol=1e-5)
    rays = _rays_cam(scene, w, h)
    # every visible surface faces the camera
    assert np.all(np.einsum("hwc,hwc->hw", r.normal, rays) < 1e-6)

    # back-project the depth: floor pixels lie on the floor plane, 1.3+ m below the camera... exactly
    points = rays * r.depth[..., None]  # camera frame
    s, c = math.sin(scene.pitch), math.cos(scene.pitch)
    up_cam = np.array([0.0, -c, -s])  # world up expressed in the camera frame
    floor_cls = {"wood": "floor-wood", "tiles": "floor-other-merged", "grass": "grass-merged"}[scene.setting]
    floor = r.semseg == ID[floor_cls]
    assert floor.any()
    assert np.allclose(points[floor] @ up_cam, -scene.cam_height, atol=1e-4)
    assert np.allclose(r.normal[floor], up_cam, atol=1e-5)
    # every "sports ball" pixel lies on the surface of one of the scene's spheres
    r_cw = np.array([[1.0, 0.0, 0.0], [0.0, -c, -s], [0.0, -s, c]])
    balls = r.semseg == ID["sports ball"]
    if balls.any():
        gaps = []
        for obj in (o for o in scene.objects if o.shape == "sphere"):
            centre = (np.array([obj.x, obj.dims["r"], obj.z]) - np.array([0.0, scene.cam_height, 0.0])) @ r_cw
            gaps.append(np.abs(np.linalg.norm(points[balls] - centre, axis=1) - obj.dims["r"]))
        assert np.min(np.stack(gaps), axis=0).max() < 1e-3

    # semantic map: only the scene's classes; boxes inside the image and matching the map
    allowed = {ID[floor_cls], ID["sky-other-merged" if scene.setting == "grass" else "wall-other-merged"]}
    allowed |= {ID[o.coco_class] for o in scene.objects}
    assert set(np.unique(r.semseg).tolist()) <= allowed
    for cls in {o.coco_class for o in scene.objects}:
        mask = r.semseg == ID[cls]
        boxes = [b for b in r.boxes if b["class"] == cls]
        covered = np.zeros_like(mask)
        for b in boxes:
            x0, y0, x1, y1 = b["xyxy"]
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
            px = (slice(round(y0 * h), round(y1 * h)), slice(round(x0 * w), round(x1 * w)))
            assert mask[px].any()  # the box holds pixels of its class
            sub = mask[px]
            assert sub[0].any() or sub[:, 0].any()  # and is tight: an edge row/column touches the class
            covered[px] = True
        assert not (mask & ~covered).any(), f"{cls} pixels outside its boxes"
        assert (cls in r.caption) == bool(boxes)
    assert r.caption.endswith(("under a blue sky", " wall"))


def test_same_seed_same_bytes_different_seed_different():
    a, b = render(make_scene(3, 5), 64, 64), render(make_scene(3, 5), 64, 64)
    for field in ("rgb", "depth", "normal", "semseg"):
        assert getattr(a, field).tobytes() == getattr(b, field).tobytes()
    assert a.boxes == b.boxes and a.caption == b.caption
    assert render(make_scene(4, 5), 64, 64).rgb.tobytes() != a.rgb.tobytes()


def test_object_count_and_scale_are_settings_and_the_defaults_draw_the_same_scenes():
    assert all(make_scene(0, i) == make_scene(0, i, (1, 4), 1.0) for i in range(8))
    big = [make_scene(0, i, (2, 3), 2.0) for i in range(24)]
    assert all(2 <= len(s.objects) <= 3 for s in big[:8])  # these fit without touching
    assert all(len(s.objects) <= 3 for s in big)
    small = [make_scene(0, i) for i in range(24)]
    median_w = [float(np.median([b["xyxy"][2] - b["xyxy"][0] for s in scenes for b in render(s, 64, 64).boxes]))
                for scenes in (small, big)]
    assert median_w[1] > 1.5 * median_w[0]  # twice the size in metres: boxes about twice as wide


def test_stores_built_before_the_object_settings_stay_cached():
    from fourm_core.config import SyntheticSource

    # ingest's cache key holds this dump: at their defaults the object settings are not in it
    assert SyntheticSource(n_samples=4).model_dump(mode="json") == {"kind": "synthetic", "n_samples": 4, "seed": 0,
                                                                   "size": 256}
    assert SyntheticSource(objects=(1, 3)).model_dump(mode="json")["objects"] == [1, 3]


def test_bad_object_range_names_the_field_and_the_fix():
    from pydantic import ValidationError

    from fourm_core.config import SyntheticSource

    with pytest.raises(ValidationError, match=r"objects \[3, 1\].*e\.g\. objects: \[1, 3\]"):
        SyntheticSource(objects=(3, 1))


def test_stage_commits_ground_truth_at_the_stored_resolution(make_config, tmp_path):
    from fourm_core import ArtifactStore
    from PIL import Image

    cfg = make_config([{"kind": "synthetic", "n_samples": 4, "seed": 1, "size": 128}], shard_size=4, shorter_side=64,
                      image_format="png")
    stores = [ArtifactStore(str(tmp_path / f"s{i}")) for i in range(2)]
    results = [run_shard(s, cfg, 0)[0] for s in stores]
    assert results[0].artifacts == ["images", "ground_truth"]
    tables = [(s.read_table("t", "images", 0), s.read_table("t", "ground_truth", 0)) for s in stores]
    assert tables[0][0].equals(tables[1][0]) and tables[0][1].equals(tables[1][1])  # deterministic
    images, gt = tables[0]
    assert images.column("sample_key").to_pylist() == gt.column("sample_key").to_pylist()
    assert images.column("sample_key").to_pylist()[0] == "synthetic-s1-000000"
    for img, g in zip(images.to_pylist(), gt.to_pylist()):
        assert (img["orig_width"], img["orig_height"]) == (128, 128) and (img["width"], img["height"]) == (64, 64)
        depth = np.load(io.BytesIO(g["depth"]))
        normal = np.load(io.BytesIO(g["normal"]))
        semseg = np.load(io.BytesIO(g["semseg"]))
        assert depth.shape == (64, 64) and depth.dtype == np.float32
        assert normal.shape == (64, 64, 3) and semseg.dtype == np.uint8
        assert Image.open(io.BytesIO(img["image"])).size == (64, 64)
        for b in json.loads(g["boxes"]):
            assert b["class"] in img["caption"]
