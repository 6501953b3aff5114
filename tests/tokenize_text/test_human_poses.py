"""human_poses serialiser: value maps at the interval ends, VQ split, 39 tokens/person, none, truncation."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tokenize_text import samples
from tokenize_stage.text.serialise import ParseError, human_poses, token_budget
from tokenize_stage.text.serialise.human_poses import BBOX_MAX_ERROR, BETAS, CAMERA, GLOBAL
from fourm_core.structured import HumanPoses, Person


def make_person(**kw) -> Person:
    base = dict(bbox=(0.1, 0.2, 0.5, 0.9), pose_tokens=range(8), global_orient=[0.0] * 9, betas=[0.0] * 10,
                camera=[0.0] * 3)
    return Person(**(base | kw))


def test_value_maps_at_the_interval_ends_and_beyond():
    # as the reference: only the camera is clipped; global / betas beyond their range leave 0..999
    assert [GLOBAL.quantise(g) for g in (-1.5, -1.0, 0.0, 1.0, 1.5)] == [-250, 0, 500, 999, 1249]
    assert [BETAS.quantise(b) for b in (-4.0, -3.0, 0.0, 3.0, 9.0)] == [-166, 0, 500, 999, 1998]
    assert [CAMERA.quantise(c) for c in (-5.0, -1.0, 0.0, 19.0, 40.0)] == [0, 0, 50, 999, 999]
    for bins in (GLOBAL, BETAS, CAMERA):
        assert bins.dequantise(0) == pytest.approx(bins.lo) and bins.dequantise(999) == pytest.approx(bins.hi)
        assert [bins.quantise(bins.dequantise(v)) for v in range(1000)] == list(range(1000))


def test_example_person_in_canonical_order():
    p = make_person(pose_tokens=[0, 511, 512, 1023, 1, 2, 3, 4], global_orient=[1, 0, 0, 0, 1, 0, 0, 0, 1],
                    betas=[-3, 3] + [0] * 8, camera=[-1, 19, 0])
    text = human_poses.serialise(HumanPoses(persons=[p]))
    assert text == ("human v0=100 v1=200 v2=500 v3=899 "
                    "pose v0=0 v0=511 v1=0 v1=511 v0=1 v0=2 v0=3 v0=4 "
                    "global v0=999 v0=500 v0=500 v0=500 v0=999 v0=500 v0=500 v0=500 v0=999 "
                    "shape v0=0 v0=999" + " v0=500" * 8 + " camera v0=0 v0=999 v0=50 ")
    assert len(text.split()) == human_poses.TOKENS_PER_PERSON == 39


def test_nobody_is_none():
    assert human_poses.serialise(HumanPoses()) == "none"
    assert human_poses.parse("none") == HumanPoses()
    with pytest.raises(ParseError, match="after 'none'"):
        human_poses.parse("none human")


@pytest.mark.parametrize("seed", range(30))
def test_round_trip_and_error_bounds(seed):
    x = samples.human_poses(np.random.default_rng(seed))
    text = human_poses.serialise(x, np.random.default_rng(seed))
    parsed = human_poses.parse(text)
    assert human_poses.serialise(parsed, np.random.default_rng(seed)) == text
    assert len(parsed.persons) == min(len(x.persons), 7)
    for p, o in zip(parsed.persons, x.persons):
        assert p.pose_tokens == o.pose_tokens
        assert np.abs(np.subtract(p.bbox, o.bbox)).max() <= BBOX_MAX_ERROR + 1e-12
        for field, bins in (("global_orient", GLOBAL), ("betas", BETAS), ("camera", CAMERA)):
            clipped = np.clip(getattr(o, field), bins.lo, bins.hi)
            assert np.abs(np.subtract(getattr(p, field), clipped)).max() <= bins.max_error + 1e-9


def test_group_order_is_random_per_person_and_parse_accepts_any_order():
    poses = HumanPoses(persons=[make_person(), make_person()])
    firsts = {human_poses.serialise(poses, seed).split()[5] for seed in range(30)}
    assert firsts == {"pose", "global", "shape", "camera"}
    assert human_poses.serialise(poses).split()[5] == "pose"  # no rng: canonical order
    for seed in range(10):
        assert human_poses.parse(human_poses.serialise(poses, seed)) == human_poses.parse(human_poses.serialise(poses))


def test_truncation_keeps_the_first_seven_persons():
    poses = samples.human_poses(np.random.default_rng(1), n=9)
    text = human_poses.serialise(poses, 0)
    assert len(text.split()) == 7 * 39 <= token_budget("human_poses")
    assert human_poses.parse(text).persons[6].pose_tokens == poses.persons[6].pose_tokens
    assert human_poses.serialise(poses, max_tokens=38) == "none"


@pytest.mark.parametrize("text, message", [
    ("human v0=1 v1=2 v2=3 v3=4 pose v0=1", "text ended"),
    ("person v0=1", "expected 'human'"),
    ("human v0=1 v1=2 v2=3 v3=4 legs", "expected pose, global, shape or camera"),
    ("human v0=1 v1=2 v2=3 v3=4 pose" + " v2=1" * 8, "v0=<t> or v1=<t-512>"),
    ("human v0=1 v1=2 v2=3 v3=4 pose" + " v1=600" * 8, "v0=<t> or v1=<t-512>"),
    ("human v0=1 v1=2 v2=3 v3=4" + " camera v0=1 v0=1 v0=1" * 2, "appears twice"),
])
def test_parse_errors(text, message):
    with pytest.raises(ParseError, match=message):
        human_poses.parse(text)


def test_bad_input_names_the_field():
    with pytest.raises(ValueError, match="pose_tokens"):
        make_person(pose_tokens=range(7))
    with pytest.raises(ValueError, match="pose_tokens"):
        make_person(pose_tokens=[1024] * 8)
    with pytest.raises(ValueError, match=r"betas\[2\]"):
        make_person(betas=[0, 0, float("inf")] + [0] * 7)
