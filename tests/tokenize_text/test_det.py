"""det serialiser: ordering, score threshold, quantisation bound, truncation, round trip, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.tokenize_text import samples
from tokenize_stage.text.serialise import ParseError, det, token_budget
from fourm_core.structured import Box, Detections


def test_example_string_and_order_by_distance_to_origin():
    dets = Detections(boxes=[
        Box(xyxy=(0.5, 0.5, 0.9, 0.9), class_name="traffic light", score=0.9),
        Box(xyxy=(0.1, 0.2, 0.3, 0.4), class_name="dog", score=0.7),
        Box(xyxy=(0.0, 0.6, 0.2, 1.0), class_name="cat", score=0.8),  # distance 0.6 < 0.707
    ])
    assert det.serialise(dets) == ("v0=100 v1=200 v2=300 v3=400 dog v0=0 v1=599 v2=200 v3=999 cat "
                                   "v0=500 v1=500 v2=899 v3=899 traffic light")


def test_ties_keep_the_input_order():
    """The reference sorts stably by distance: equal distances keep the labeler's order."""
    same = (0.2, 0.2, 0.5, 0.5)
    dets = Detections(boxes=[Box(xyxy=same, class_name="zebra"), Box(xyxy=same, class_name="apple"),
                             Box(xyxy=(0.2, 0.2, 0.4, 0.9), class_name="zebra"),
                             Box(xyxy=(0.1, 0.3, 0.2, 0.4), class_name="cat"), Box(xyxy=(0.3, 0.1, 0.4, 0.2),
                                                                                  class_name="dog")])
    parsed = det.parse(det.serialise(dets)).boxes
    assert [b.class_name for b in parsed] == ["zebra", "apple", "zebra", "cat", "dog"]
    assert parsed[2].xyxy[3] == pytest.approx(0.9, abs=det.MAX_ERROR)


def test_score_threshold():
    def box(score):
        return Box(xyxy=(0.1, 0.1, 0.2, 0.2), class_name="cup", score=score)

    assert det.serialise(Detections(boxes=[box(0.5999)])) == ""
    assert det.serialise(Detections(boxes=[box(0.6)])).endswith("cup")
    assert det.serialise(Detections(boxes=[box(None)])).endswith("cup")  # parsed boxes carry no score


def test_rounding_and_interval_ends():
    dets = Detections(boxes=[Box(xyxy=(0.0, 0.5, 1.0, 1.0), class_name="tv")])
    assert det.serialise(dets) == "v0=0 v1=500 v2=999 v3=999 tv"  # 499.5 rounds half to even
    half = Detections(boxes=[Box(xyxy=(2.5 / 999, 3.5 / 999, 0.5, 0.5), class_name="tv")])
    assert det.serialise(half).startswith("v0=2 v1=4 ")  # Python's round, as the reference


def test_no_boxes():
    assert det.serialise(Detections()) == ""
    assert det.parse("") == Detections() and det.parse("   ") == Detections()


@pytest.mark.parametrize("seed", range(40))
def test_round_trip_and_error_bound(seed):
    g = np.random.default_rng(seed)
    dets = samples.detections(g)
    text = det.serialise(dets)
    parsed = det.parse(text)
    # the order is by the unquantised distance (as the reference): boxes closer than a quantisation step
    # may swap in a second serialisation, the boxes themselves are the same
    def key(b):
        return b.xyxy, b.class_name

    assert sorted(det.parse(det.serialise(parsed)).boxes, key=key) == sorted(parsed.boxes, key=key)
    kept = [b for b in dets.boxes if b.score >= det.SCORE_THRESHOLD]
    assert len(parsed.boxes) == min(len(kept), token_budget("det") // det.TOKENS_PER_BOX)
    dists = [math.hypot(*b.xyxy[:2]) for b in parsed.boxes]
    assert all(b >= a - 2 * det.MAX_ERROR for a, b in zip(dists, dists[1:]))
    # every parsed box is within the quantisation bound of a distinct kept original of the same class
    pool = list(kept)
    for p in parsed.boxes:
        match = next(o for o in pool if o.class_name == p.class_name
                     and max(abs(a - b) for a, b in zip(o.xyxy, p.xyxy)) <= det.MAX_ERROR + 1e-12)
        pool.remove(match)


def test_truncation_keeps_the_51_closest_boxes():
    g = np.random.default_rng(0)
    dets = samples.detections(g, n=80)
    dets = Detections(boxes=[b.model_copy(update={"score": 0.9}) for b in dets.boxes])
    words = det.serialise(dets).split()
    parsed = det.parse(det.serialise(dets))
    assert len(parsed.boxes) == 51 == token_budget("det") // 5
    farthest_kept = max(math.hypot(*b.xyxy[:2]) for b in parsed.boxes)
    dropped = sorted(math.hypot(*b.xyxy[:2]) for b in dets.boxes)[51:]
    assert all(d >= farthest_kept - 2 * det.MAX_ERROR for d in dropped)
    assert len(det.parse(det.serialise(dets, max_tokens=12)).boxes) == 2
    assert len(words) >= 255  # class names of two words count as one token each


@pytest.mark.parametrize("text, message", [
    ("v0=1 v1=2 v2=3", "text ended"),
    ("v0=1 v1=2 v2=3 v3=4 unicorn", "unicorn"),
    ("v0=1 v1=2 v2=3 v3=4 v0=5", "expected a class name"),
    ("v0=1 v2=2 v2=3 v3=4 dog", "v1="),
    ("v0=9 v1=2 v2=3 v3=4 dog", "x0 > x1"),
    ("v0=1000 v1=2 v2=3 v3=4 dog", "v0=1000"),
])
def test_parse_errors(text, message):
    with pytest.raises(ParseError, match=message):
        det.parse(text)


def test_bad_input_names_the_field():
    with pytest.raises(ValueError, match="class_name='Dog'"):
        Box(xyxy=(0, 0, 1, 1), class_name="Dog")
    with pytest.raises(ValueError, match="xyxy"):
        Box(xyxy=(0, 0, 1, 1.2), class_name="dog")
