"""Pre-tokenization of the sequence modalities (tokenize_stage/sequences.py): token shards aligned with
tokens/_crops whose text parses back to the stored structured form, geometry that follows the image crop,
unit caching, a retrained mask_vq re-tokenizing only sam_instance, and the missing-tokenizer rule.

Labels are written in the labelers' storage format (pseudolabel's column writers, COCO RLE) without running
any labeler; mask_vq / pose_vq are tiny and trained for a few steps on those stored labels."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from pycocotools import mask as mask_utils

from fourm_core.config import DatasetConfig, SyntheticSource
from fourm_core.modalities import MODALITIES
from fourm_core.units import Unit, UnitOutput, run_unit
from pseudolabel.detection.columns import to_table as det_table
from pseudolabel.humans.columns import to_table as humans_table
from pseudolabel.humans.types import HumanPosesRaw, PersonRaw
from tokenize_stage.crops import Crop, CropConfig, apply_crop, crop_for
from tokenize_stage.labels import read_label_arrays
from tokenize_stage.seq_geometry import crop_boxes, crop_mask, tight_box
from tokenize_stage.sequences import read_structured, row_rng, text_tokenizer
from tokenize_stage.stage import CROPS_ARTIFACT, STAGE
from tokenize_stage.synthetic import pose
from tokenize_stage.text.serialise import SERIALISERS
from tokenize_stage.text.serialise import det as det_ser
from fourm_core.structured import Box, Detections
from tokenize_stage.train_tokenizer import TrainTokenizerConfig, train_tokenizer

DS = "seq"
H, W = 120, 160  # the stored image (and SAM mask frame) size
SEQ = ("det", "color_palette", "metadata", "human_poses", "sam_instance")
RECT = (40, 30, 100, 90)  # x0, y0, x1, y1 (exclusive) pixels of the drawn rectangle in sample 0


def _config(**tokenize):
    return DatasetConfig(name=DS, sources=[SyntheticSource()],
                         tokenize={"profile": "tiny", "crops": {"n_crops": 3, "flip_prob": 0.5},
                                   "sequences": {"det_score_threshold": 0.0}, **tokenize})


def _commit(store, artifact, shard, rows):
    unit = Unit(stage="test_labels", dataset=DS, artifacts=[artifact], shard=shard, code_version="1",
                config={"n": len(rows)})
    run_unit(store, unit, lambda: UnitOutput({artifact: pa.Table.from_pylist(rows) if isinstance(rows, list)
                                                        else rows}))


def _rect_mask(x0, y0, x1, y1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def _rle(m):
    return mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))["counts"].decode("ascii")


def _labels(store, n_samples=6, shard=0):
    rng = np.random.default_rng(shard)
    keys = [f"s{shard}-{i:03d}" for i in range(n_samples)]
    rx0, ry0, rx1, ry1 = RECT
    rect_box = (rx0 / W, ry0 / H, rx1 / W, ry1 / H)
    dets, sams, people, pals, metas = [], [], [], [], []
    for i, key in enumerate(keys):
        boxes = [Box(xyxy=rect_box, class_name="dog", score=0.9)]
        boxes += [Box(xyxy=_rand_box(rng), class_name="cat", score=float(rng.uniform(0.1, 1))) for _ in range(i % 3)]
        dets.append(Detections(boxes=boxes))
        masks = [_rect_mask(*RECT)] + [_rect_mask(*_rand_px(rng)) for _ in range(1 + i % 3)]
        sams.append({"sample_key": key, "n_instances": len(masks), "mask_height": H, "mask_width": W,
                     "instances": [{"counts": _rle(m), "bbox": [0.0, 0.0, 1.0, 1.0], "area": int(m.sum()),
                                    "predicted_iou": 0.9, "stability_score": 0.9} for m in masks]})
        people.append(HumanPosesRaw(persons=[
            PersonRaw(bbox=rect_box if j == 0 else _rand_box(rng), score=0.9,
                      global_orient=np.eye(3).ravel(), body_pose=pose(rng), betas=rng.normal(size=10) * 0.5,
                      camera=(1.0, 0.1 * j, -0.2)) for j in range(i % 3 + (i == 0))]))
        pals.append(bytes(rng.integers(0, 256, 84, dtype=np.uint8)))
        metas.append({"sample_key": key, "original_width": 640 + i, "original_height": 480, "brightness": 100.0 + i,
                      "n_humans": i % 3, "watermark_score": None, "providers": "test"})
    t = det_table(dets)
    _commit(store, "labels/det", shard, t.add_column(0, "sample_key", pa.array(keys)))
    _commit(store, "labels/sam_instance", shard, sams)
    t = humans_table(people)
    _commit(store, "labels/human_poses", shard, t.add_column(0, "sample_key", pa.array(keys)))
    _commit(store, "labels/color_palette", shard, pa.table({"sample_key": keys,
                                                           "palettes": pa.array(pals, pa.binary(84))}))
    _commit(store, "labels/metadata", shard, metas)
    return keys


def _rand_px(rng):
    x0, y0 = int(rng.integers(0, W - 20)), int(rng.integers(0, H - 20))
    return x0, y0, x0 + int(rng.integers(5, 20)), y0 + int(rng.integers(5, 20))


def _rand_box(rng):
    x0, y0, x1, y1 = _rand_px(rng)
    return (x0 / W, y0 / H, x1 / W, y1 / H)


def _train(store, name, seed=0):
    return train_tokenizer(store, DS, TrainTokenizerConfig(tokenizer=name, steps=3, batch_size=4, eval_samples=2,
                                                           seed=seed))


@pytest.fixture
def ready(store):
    for shard in (0, 1):
        _labels(store, shard=shard)
    _train(store, "mask_vq")
    _train(store, "pose_vq")
    return store


def test_stored_labels_train_mask_and_pose_vq(ready):
    keys, masks, _ = read_label_arrays(ready, DS, "sam_instance")
    assert keys[0] == "s0-000#0" and {m.shape for m in masks} == {(64, 64)}
    assert masks[0].all()  # the rectangle fills its own tight box
    assert len(masks) == sum(1 + 1 + i % 3 for i in range(6)) * 2
    keys, poses, _ = read_label_arrays(ready, DS, "human_poses")
    assert {p.shape for p in poses} == {(207,)} and len(poses) == sum(i % 3 + (i == 0) for i in range(6)) * 2


def test_token_shards_parse_back_to_structured(ready):
    store, config = ready, _config()
    results = STAGE.run_shard(store, config, 0)
    assert {r.status.value for r in results} == {"done"}
    crops = store.read_table(DS, CROPS_ARTIFACT, 0)
    pairs = list(zip(crops.column("sample_key").to_pylist(), crops.column("crop").to_pylist()))
    assert len(pairs) == 6 * 3
    tok, _ = text_tokenizer()
    for name in SEQ:
        t = store.read_table(DS, MODALITIES[name].token_artifact, 0)
        assert t.schema.field("crop").type == pa.int16() and t.schema.field("tokens").type == pa.list_(pa.int16())
        assert t.column_names == ["sample_key", "crop", "text", "tokens", "structured"]
        assert list(zip(t.column("sample_key").to_pylist(), t.column("crop").to_pylist())) == pairs
        ser, structured = SERIALISERS[name], read_structured(t, name)
        for row, s in zip(t.to_pylist(), structured):
            assert row["tokens"] == tok.encode(row["text"]).ids and len(row["tokens"]) == len(row["text"].split())
            assert 1 not in row["tokens"]  # no [UNK]
            parsed = ser.parse(row["text"])
            rng = lambda: row_rng(CropConfig(n_crops=3), name, row["sample_key"], row["crop"])  # noqa: E731
            if name in ("sam_instance", "color_palette"):
                assert parsed == s  # exact
            elif name == "det":
                assert len(parsed.boxes) == len(s.boxes)  # threshold 0: every box in the crop is written
                for b in parsed.boxes:  # every parsed box is a stored box up to quantisation
                    tol = det_ser.MAX_ERROR + 1e-9
                    assert any(b.class_name == c.class_name and np.allclose(b.xyxy, c.xyxy, atol=tol) for c in s.boxes)
                assert ser.serialise(parsed, score_threshold=0.0) == row["text"]
            elif name == "human_poses":
                assert len(parsed.persons) == len(s.persons)
                for p, q in zip(parsed.persons, s.persons):
                    assert p.pose_tokens == q.pose_tokens
                    assert np.allclose(p.bbox, q.bbox, atol=0.5 / 999 + 1e-9)
                    assert np.allclose(p.betas, np.clip(q.betas, -3, 3), atol=0.5 / 166.5 + 1e-9)
                # the group order was drawn from the row's generator: re-serialising with it gives the same text
                assert ser.serialise(parsed, rng()) == row["text"]
            else:  # metadata: bin representatives; the chunk order comes from the row's generator
                assert ser.serialise(parsed, rng()) == ser.serialise(s, rng()) == row["text"]
    sam = read_structured(store.read_table(DS, MODALITIES["sam_instance"].token_artifact, 0), "sam_instance")
    assert any(pt.instances for s in sam for pt in s.points)  # instances were found and coded


def test_geometry_follows_the_image_crop(ready):
    """The drawn rectangle (image pixels) is a det box, a SAM instance and a person box of sample 0: after
    each stored crop (+ flip) they sit where the rectangle is in the cropped image."""
    store, config = ready, _config(crops={"n_crops": 6, "flip_prob": 0.5, "scale": (0.5, 0.9)})
    STAGE.run_shard(store, config, 0)
    image = np.zeros((H, W, 3), np.uint8)
    image[RECT[1]:RECT[3], RECT[0]:RECT[2]] = 255
    crops = [r for r in store.read_table(DS, CROPS_ARTIFACT, 0).to_pylist() if r["sample_key"] == "s0-000"]
    assert {r["flip"] for r in crops} == {True, False}
    tables = {n: store.read_table(DS, MODALITIES[n].token_artifact, 0).to_pylist() for n in ("det", "human_poses",
                                                                                               "sam_instance")}
    checked = sam_hits = 0
    for c in crops:
        crop = Crop(tuple(c["box"]), c["flip"])
        seen = apply_crop(image, crop, "rgb")[..., 0] > 0
        if not seen.any():
            continue
        h, w = seen.shape
        x0, y0, x1, y1 = tight_box(seen)
        expected = np.array([x0 / w, y0 / h, (x1 + 1) / w, (y1 + 1) / h])  # pixel edges, normalised
        tol = 1.5 / min(h, w)
        row = lambda n: next(r for r in tables[n] if r["sample_key"] == "s0-000" and r["crop"] == c["crop"])  # noqa
        dog = [b for b in Detections.model_validate_json(row("det")["structured"]).boxes if b.class_name == "dog"]
        assert len(dog) == 1 and np.allclose(dog[0].xyxy, expected, atol=tol), (dog, expected, c)
        parsed = det_ser.parse(row("det")["text"])  # and the text says the same
        assert any(b.class_name == "dog" and np.allclose(b.xyxy, expected, atol=tol + 1e-3) for b in parsed.boxes)
        person = json.loads(row("human_poses")["structured"])["persons"][0]
        assert np.allclose(person["bbox"], expected, atol=tol)
        # SAM: integer pixels of the 224 crop; the rectangle's instance has exactly the expected box
        seen224 = crop_mask(seen, Crop((0, 0, 1, 1), False))
        want = tight_box(seen224)
        for p in json.loads(row("sam_instance")["structured"])["points"]:  # the 7 query points
            if want[0] < p["x"] < want[2] and want[1] < p["y"] < want[3]:  # inside the rectangle: it is listed
                assert any(np.abs(np.array(i["bbox"]) - want).max() <= 1 for i in p["instances"]), (p, want)
                sam_hits += 1
        checked += 1
    assert checked >= 3 and sam_hits >= 1


def test_crop_boxes_matches_apply_crop_pixels():
    """crop_boxes on a normalised box == the rectangle's bounds in apply_crop's output, flips included."""
    image = np.zeros((H, W), np.uint8)
    image[RECT[1]:RECT[3], RECT[0]:RECT[2]] = 1
    box = np.array([[RECT[0] / W, RECT[1] / H, RECT[2] / W, RECT[3] / H]])
    cfg = CropConfig(scale=(0.4, 0.9), flip_prob=0.5)
    n = 0
    for i in range(40):
        crop = crop_for(cfg, "k", i)
        seen = apply_crop(image, crop, "mask") > 0
        out, keep = crop_boxes(box, crop)
        assert keep[0] == seen.any() or not seen.any()
        if not seen.any():
            continue
        h, w = seen.shape
        x0, y0, x1, y1 = tight_box(seen)
        assert np.allclose(out[0], [x0 / w, y0 / h, (x1 + 1) / w, (y1 + 1) / h], atol=1.5 / min(h, w)), (i, crop)
        n += 1
    assert n > 20
    empty, keep = crop_boxes(np.array([[0.0, 0.0, 0.05, 0.05]]), Crop((0.5, 0.5, 1.0, 1.0), True))
    assert len(empty) == 0 and not keep[0]  # a box outside the crop is dropped


def test_caching_and_changed_mask_vq_retokenizes_only_sam(ready):
    store, config = ready, _config()
    STAGE.run_shard(store, config, 0)
    assert {r.status.value for r in STAGE.run_shard(store, config, 0)} == {"cached"}
    before = store.read_manifest(DS, MODALITIES["sam_instance"].token_artifact, 0)
    assert before.ingredients.model.id == "mask_vq:tiny"
    _train(store, "mask_vq", seed=1)
    status = {r.artifacts[0]: r.status.value for r in STAGE.run_shard(store, config, 0)}
    assert status.pop(MODALITIES["sam_instance"].token_artifact) == "done"
    assert set(status.values()) == {"cached"} and CROPS_ARTIFACT in status and len(status) == 5


def test_missing_vq_tokenizer_skips_or_fails_clearly(store):
    _labels(store)
    # Not configured and not committed: human_poses and sam_instance are skipped, the others run.
    done = {r.artifacts[0] for r in STAGE.run_shard(store, _config(), 0)}
    assert done == {CROPS_ARTIFACT} | {MODALITIES[m].token_artifact for m in ("det", "color_palette", "metadata")}
    assert MODALITIES["sam_instance"].token_artifact in STAGE.artifacts_for(
        _config(train={"tokenizers": ["mask_vq"]}))
    # Listed (or configured for training) but not committed: the unit fails naming the tokenizer and command.
    with pytest.raises(FileNotFoundError, match=r"sam_instance needs the mask_vq tokenizer.*"
                                                r"python -m tokenize_stage train --tokenizer mask_vq"):
        STAGE.run_shard(store, _config(modalities=["det", "sam_instance"]), 0)
    assert store.read_manifest(DS, MODALITIES["det"].token_artifact, 0) is not None


def test_person_flip_mirrors_the_body():
    """A flipped person: box mirrored, camera tx negated, left/right joints swapped with R -> M R M; flipping
    twice gives the person back."""
    from tokenize_stage.seq_geometry import SMPL_FLIP_PERM, transform_person

    rng = np.random.default_rng(0)
    person = {"bbox": [0.1, 0.2, 0.4, 0.9], "score": 0.9, "global_orient": np.eye(3).ravel().tolist(),
              "body_pose": pose(rng), "betas": [0.0] * 10, "camera": [1.0, 0.3, -0.1]}
    once = transform_person(person, Crop((0, 0, 1, 1), True))
    assert np.allclose(once["bbox"], [0.6, 0.2, 0.9, 0.9]) and once["camera"] == [1.0, -0.3, -0.1]
    body, flipped = person["body_pose"].reshape(23, 3, 3), once["body_pose"].reshape(23, 3, 3)
    m = np.diag([1.0, -1.0, -1.0])
    left_hip, right_hip = 1, 2  # SMPL joints (0 = pelvis = root); body_pose starts at joint 1
    assert SMPL_FLIP_PERM[left_hip] == right_hip
    assert np.allclose(flipped[left_hip - 1], m @ body[right_hip - 1] @ m, atol=1e-6)
    twice = transform_person(once, Crop((0, 0, 1, 1), True))
    assert np.allclose(twice["body_pose"], person["body_pose"], atol=1e-6)
    assert np.allclose(twice["bbox"], person["bbox"]) and twice["camera"] == person["camera"]
    assert transform_person(person, Crop((0.5, 0.0, 1.0, 1.0), False)) is None  # outside the crop: dropped
