"""HMR2-style pose labeler: person-free images give "none", valid rotations, weights round trips and the
HMR2.0 checkpoint key mapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pseudolabel.detection import build_detector, detect
from pseudolabel.humans import (
    TINY,
    HumanPosesRaw,
    PoseEstimator,
    estimate_poses,
    hmr2_to_ours,
    load_hmr2_checkpoint,
    load_pose_model,
    n_humans,
    ours_to_hmr2,
    save_pose_model,
    to_human_poses,
)
from pseudolabel.humans.checkpoint import CheckpointError, map_hmr2_key
from pseudolabel.humans.crops import IMAGENET_MEAN, IMAGENET_STD, crop_person
from pseudolabel.humans.rotations import rot6d_to_rotmat, rotation_error, rotmat_to_rot6d
from tokenize_stage.text.serialise import human_poses
from fourm_core.structured import Box, Detections

from .conftest import small

PEOPLE = Detections(boxes=[Box(xyxy=(0.1, 0.1, 0.4, 0.9), class_name="person", score=0.95),
                           Box(xyxy=(0.5, 0.2, 0.6, 0.5), class_name="dog", score=0.9),
                           Box(xyxy=(0.55, 0.3, 0.95, 0.95), class_name="person", score=0.7)])
NO_PEOPLE = Detections(boxes=[Box(xyxy=(0.5, 0.2, 0.6, 0.5), class_name="dog", score=0.9)])


def fake_pose_tokenizer(body: np.ndarray) -> np.ndarray:
    """Stand-in for the pose VQ (another stage): any deterministic (N, 207) -> (N, 8) codes in [0, 1024)."""
    return (np.abs(body[:, :8]) * 1000).astype(np.int64) % 1024


def assert_rotations(r: np.ndarray) -> None:
    ortho, det = rotation_error(torch.from_numpy(r.reshape(-1, 3, 3)).double())
    assert float(ortho.max()) < 1e-5
    assert torch.allclose(det, torch.ones_like(det), atol=1e-5)


def test_person_free_image_yields_none_end_to_end(images, tiny_pose_model):
    # the detector's real output at the production threshold: the seeded tiny weights find nobody
    d = small(build_detector("rt_detr", "tiny"))
    dets = detect(d, images[:1])
    assert not [b for b in dets[0].boxes if b.class_name == "person"]
    est = PoseEstimator(tiny_pose_model)
    for raw in estimate_poses(est, images[:2], [dets[0], NO_PEOPLE]):
        assert raw == HumanPosesRaw(persons=[])
        assert n_humans(raw) == 0
        poses = to_human_poses(raw, pose_tokenizer=None)  # no tokenizer needed when nobody is there
        assert human_poses.serialise(poses) == "none"
        assert human_poses.parse("none") == poses


def test_persons_get_valid_smpl_outputs_and_serialise(images, tiny_pose_model):
    est = PoseEstimator(tiny_pose_model, batch_size=2)
    raws = estimate_poses(est, images[:2], [PEOPLE, NO_PEOPLE])
    assert [n_humans(r) for r in raws] == [2, 0]
    persons = raws[0].persons
    assert [p.bbox for p in persons] == [PEOPLE.boxes[0].xyxy, PEOPLE.boxes[2].xyxy]  # detector order kept
    for p in persons:
        assert len(p.body_pose) == 207 and len(p.global_orient) == 9 and len(p.betas) == 10 and len(p.camera) == 3
        assert_rotations(np.array(p.global_orient))
        assert_rotations(np.array(p.body_pose))
        assert all(-1 <= g <= 1 for g in p.global_orient) and all(-3 <= b <= 3 for b in p.betas)
    poses = to_human_poses(raws[0], fake_pose_tokenizer)
    text = human_poses.serialise(poses)
    assert text.count("human") == 2
    assert human_poses.parse(text).persons[0].pose_tokens == poses.persons[0].pose_tokens
    with pytest.raises(ValueError, match="pose VQ"):
        to_human_poses(raws[0], None)
    # batching across images and batch sizes does not change a person's result
    alone = estimate_poses(PoseEstimator(tiny_pose_model, batch_size=1), [images[0]], [PEOPLE])[0]
    assert np.allclose(alone.persons[1].body_pose, persons[1].body_pose, atol=1e-5)


def test_max_persons_keeps_highest_scores(images, tiny_pose_model):
    raw = estimate_poses(PoseEstimator(tiny_pose_model, max_persons=1), [images[0]], [PEOPLE])[0]
    assert [p.score for p in raw.persons] == [0.95]


def test_rot6d_gives_proper_rotations():
    x = torch.randn(1000, 6, dtype=torch.float64)
    r = rot6d_to_rotmat(x)
    ortho, det = rotation_error(r)
    assert float(ortho.max()) < 1e-12 and torch.allclose(det, torch.ones_like(det))
    assert torch.allclose(rot6d_to_rotmat(rotmat_to_rot6d(r)), r)


def test_pose_model_save_load_round_trip(tiny_pose_model, tmp_path):
    save_pose_model(tiny_pose_model, tmp_path)
    loaded = load_pose_model(tmp_path)
    x = torch.randn(3, 3, TINY.image_height, TINY.image_width)
    with torch.no_grad():
        a, b = tiny_pose_model(x), loaded(x)
    for f in ("global_orient", "body_pose", "betas", "camera"):
        assert torch.equal(getattr(a, f), getattr(b, f))


def test_hmr2_checkpoint_naming_loads_strict(tiny_pose_model, tmp_path):
    theirs = ours_to_hmr2(tiny_pose_model.state_dict())
    assert "backbone.last_norm.weight" in theirs and "smpl_head.decpose.weight" in theirs
    assert theirs["backbone.pos_embed"].shape[1] == tiny_pose_model.backbone.vit.pos_embed.shape[1] + 1
    # ViTPose's class-token slot is added to every patch: put something there and fold it back
    g = torch.Generator().manual_seed(0)
    slot = torch.randn(theirs["backbone.pos_embed"][:, :1].shape, generator=g)
    theirs["backbone.pos_embed"] = theirs["backbone.pos_embed"] + torch.cat(
        [slot, -slot.expand_as(theirs["backbone.pos_embed"][:, 1:])], dim=1)
    # what else a Lightning checkpoint of HMR2.0 holds; skipped by the loader
    theirs["smpl.shapedirs"] = torch.zeros(4, 3, 10)
    theirs["discriminator.D_conv1.weight"] = torch.zeros(1)
    theirs["initialized"] = torch.tensor(True)
    path = tmp_path / "hmr2.ckpt"
    torch.save({"state_dict": theirs, "epoch": 7, "global_step": 1000}, path)
    loaded = load_hmr2_checkpoint(path, TINY)  # strict load inside
    x = torch.randn(2, 3, TINY.image_height, TINY.image_width, generator=g)
    with torch.no_grad():
        a, b = tiny_pose_model(x), loaded(x)
    # (p - s) + s == p only up to float32 rounding, which the network amplifies a little
    assert torch.allclose(a.body_pose, b.body_pose, atol=1e-5)
    assert torch.allclose(a.camera, b.camera, atol=1e-5)
    assert set(hmr2_to_ours(theirs)) == set(tiny_pose_model.state_dict())


def test_unknown_hmr2_names_fail_loudly():
    assert map_hmr2_key("backbone.blocks.31.mlp.fc2.bias") == "backbone.vit.blocks.31.mlp.fc2.bias"
    assert map_hmr2_key("smpl.faces_tensor") is None
    with pytest.raises(CheckpointError):
        map_hmr2_key("backbone.blocks.0.attn.relative_position_bias_table")


def test_crop_centres_the_person():
    im = np.zeros((200, 300, 3), np.uint8)
    im[95:105, 145:155] = 255  # white square at the box centre (150, 100)
    crop = crop_person(im, np.array([120.0, 40.0, 180.0, 160.0]), TINY)
    assert crop.shape == (TINY.image_height, TINY.image_width, 3)
    pixel = crop[TINY.image_height // 2, TINY.image_width // 2] * IMAGENET_STD + IMAGENET_MEAN
    assert np.allclose(pixel, 1.0, atol=0.05)
    corner = crop[0, 0] * IMAGENET_STD + IMAGENET_MEAN
    assert np.allclose(corner, 0.0, atol=0.05)


def test_hflip_person_is_an_involution_and_keeps_rotations_valid(images, tiny_pose_model):
    from pseudolabel.humans.flip import hflip_person

    p = estimate_poses(PoseEstimator(tiny_pose_model), [images[0]], [PEOPLE])[0].persons[0]
    f = hflip_person(p)
    assert f.bbox == pytest.approx((0.6, 0.1, 0.9, 0.9))
    assert f.camera[1] == pytest.approx(-p.camera[1])
    assert_rotations(np.array(f.body_pose))
    assert_rotations(np.array(f.global_orient))
    # left hip (body joint 0 = SMPL joint 1) becomes the mirrored right hip (body joint 1)
    m = np.diag([1.0, -1.0, -1.0])
    right_hip = np.array(p.body_pose).reshape(23, 3, 3)[1]
    assert np.array(f.body_pose).reshape(23, 3, 3)[0] == pytest.approx(m @ right_hip @ m)
    back = hflip_person(f)
    for k in ("bbox", "global_orient", "body_pose", "betas", "camera"):
        assert np.allclose(getattr(back, k), getattr(p, k), atol=1e-12)


def test_checkpoint_the_safe_loader_refuses_gives_conversion_advice_and_safetensors_loads(tiny_pose_model,
                                                                                         tmp_path, monkeypatch):
    import sys
    import types

    from safetensors.torch import save_file

    # a Lightning checkpoint also pickles the yacs CfgNode (a dict subclass) of its hyper-parameters
    yacs, config = types.ModuleType("yacs"), types.ModuleType("yacs.config")

    class CfgNode(dict):
        pass

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    config.CfgNode, yacs.config = CfgNode, config
    monkeypatch.setitem(sys.modules, "yacs", yacs)
    monkeypatch.setitem(sys.modules, "yacs.config", config)
    theirs = ours_to_hmr2(tiny_pose_model.state_dict())
    ckpt = tmp_path / "hmr2.ckpt"
    torch.save({"state_dict": theirs, "hyper_parameters": {"cfg": CfgNode(MODEL=CfgNode(IMAGE_SIZE=256))}}, ckpt)
    with pytest.raises(CheckpointError, match="safetensors"):
        load_hmr2_checkpoint(ckpt, TINY)
    save_file({k: v.contiguous() for k, v in theirs.items()}, str(tmp_path / "hmr2.safetensors"))
    loaded = load_hmr2_checkpoint(tmp_path / "hmr2.safetensors", TINY)
    x = torch.randn(1, 3, TINY.image_height, TINY.image_width)
    with torch.no_grad():
        assert torch.allclose(loaded(x).betas, tiny_pose_model(x).betas, atol=1e-6)
