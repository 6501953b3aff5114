"""Our serialisers and tokenizer against the reference implementation's vectors (tests/fixtures/ml4m/text).

Each case holds the reference's raw input, its serialised string and its token ids. The raw inputs are in the
reference's raw format; the small adapters below turn them into our structured types the way our labelers
and crop step do (normalised boxes, the full-image crop). Where the reference draws an order at random
(metadata shuffle, human-pose group order) the recorded order is passed in. The reference writes
out-of-vocabulary words for inputs our validated types refuse (negative or out-of-range palette values,
floats in count fields, an empty palette): those cases check the refusal instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import pydantic
import pytest

from tokenize_stage.text.serialise import (
    Box,
    ColorPalette,
    Detections,
    HumanPoses,
    Metadata,
    Person,
    color_palette,
    det,
    human_poses,
    metadata,
    sam_instance,
)

VECTORS = json.loads((Path(__file__).parents[1] / "fixtures/ml4m/text/text_vectors.json").read_text())
UNLIMITED = 10**6  # the reference's serialisers do not truncate (its masking does): compare untruncated text
GROUPS = ["pose", "global", "camera", "shape"]  # what the reference's torch.randperm(4) indexes

REFUSED = {  # cases whose reference output contains words outside the vocabulary
    ("metadata", "int_field_given_as_float"), ("metadata", "image_dim_float"),
    ("color_palette", "direct_empty"), ("color_palette", "direct_out_of_range_values"),
}


def cases(modality):
    return [pytest.param(c, id=c["name"]) for c in VECTORS[modality]["cases"]]


def det_input(raw) -> Detections:
    return Detections(boxes=[Box(xyxy=i["boxes"], class_name=i["class_name"], score=i["score"])
                             for i in raw["instances"]])


def poses_input(case) -> HumanPoses:
    """The reference's raw poses after the full-image crop: pixel boxes / (W, H) clipped to the image; a person
    entirely outside it is dropped."""
    raw, (h, w) = case["raw"], case["image_size_hw"]
    persons = []
    for i, box in enumerate(raw.get("bbox_xyxy", [])):
        x0, y0, x1, y1 = (min(max(v / s, 0.0), 1.0) for v, s in zip(box, (w, h, w, h)))
        if x1 <= x0 or y1 <= y0:
            continue
        smpl = raw["pred_smpl_params"]
        persons.append(Person(bbox=(x0, y0, x1, y1), pose_tokens=raw["pose_tokenized"][i],
                              global_orient=[v for row in smpl["global_orient"][i][0] for v in row],
                              betas=smpl["betas"][i], camera=raw["pred_cam"][i]))
    return HumanPoses(persons=persons)


@pytest.mark.parametrize("case", cases("det"))
def test_det(case, ref_tok):
    text = det.serialise(det_input(case["raw"]), max_tokens=UNLIMITED)
    assert text == case["serialised"]
    assert ref_tok.encode(text).ids == case["token_ids"]


@pytest.mark.parametrize("case", cases("metadata"))
def test_metadata(case, ref_tok):
    if ("metadata", case["name"]) in REFUSED:
        with pytest.raises(pydantic.ValidationError):
            Metadata(**case["raw"])
        return
    meta = Metadata(**case["raw"])
    order = [int(c.split()[0][3:]) for c in case["chunks"]]  # the reference's (shuffled) chunk order
    assert metadata.chunks(meta, order=order, max_tokens=UNLIMITED) == case["chunks"]
    text = metadata.serialise(meta, order=order, max_tokens=UNLIMITED)
    assert text == case["serialised"]
    assert ref_tok.encode(text).ids == case["token_ids"]
    assert [ref_tok.encode(c).ids for c in case["chunks"]] == case["chunk_token_ids"]
    # our stored sequence: whole chunks within 40 tokens, i.e. the chunks the reference keeps before its EOS
    kept = [c for c in case["masking"]["sequence_before_masking"] if c != [3]]
    assert ref_tok.encode(metadata.serialise(meta, order=order)).ids == [t for c in kept for t in c]


@pytest.mark.parametrize("case", cases("color_palette"))
def test_color_palette(case, ref_tok):
    if ("color_palette", case["name"]) in REFUSED:
        with pytest.raises(pydantic.ValidationError):
            vals = case["flat_values"]
            ColorPalette(colors=[vals[i:i + 3] for i in range(0, len(vals), 3)])
        return
    vals = [round(v) for v in case["flat_values"]]  # the labeler stores integer colours (half to even)
    text = color_palette.serialise(ColorPalette(colors=[vals[i:i + 3] for i in range(0, len(vals), 3)]))
    assert text == case["serialised"]
    assert ref_tok.encode(text).ids == case["token_ids"]


@pytest.mark.parametrize("case", cases("human_poses"))
def test_human_poses(case, ref_tok):
    orders = [[GROUPS[j] for j in perm] for perm in case["section_permutations"]]
    text = human_poses.serialise(poses_input(case), group_orders=orders, max_tokens=UNLIMITED)
    assert text == case["serialised"]
    assert ref_tok.encode(text).ids == case["token_ids"]


@pytest.mark.parametrize("case", cases("sam_instance"))
def test_sam_instance(case, ref_tok):
    """Points and their instance order come from the reference's RNG and cv2 membership tests: given the
    content it chose (parsed back from its text), our serialiser writes the same text."""
    text = sam_instance.serialise(sam_instance.parse(case["serialised"]), max_tokens=UNLIMITED)
    assert text == case["serialised"]
    assert ref_tok.encode(text).ids == case["token_ids"]


@pytest.mark.parametrize("case", cases("caption"))
def test_caption(case, ref_tok):
    assert ref_tok.encode(case["raw"]).ids == case["token_ids"]
