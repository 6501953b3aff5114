"""sam_instance serialiser: point queries, per-point none, exact round trip, truncation rule, errors."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tokenize_text import samples
from tokenize_stage.text.serialise import ParseError, sam_instance, token_budget
from fourm_core.structured import SamInstance, SamInstances, SamPoint

CODES = list(range(500, 516))  # crosses the v0/v1 split at 512


def test_example():
    inst = SamInstance(bbox=(10, 20, 30, 40), mask_tokens=CODES)
    sam = SamInstances(points=[SamPoint(y=25, x=15, instances=[inst]), SamPoint(y=200, x=3)])
    text = sam_instance.serialise(sam)
    assert text == ("point v0=25 v1=15 polygon v0=10 v1=20 v2=30 v3=40 "
                    + " ".join(f"v0={t}" for t in range(500, 512)) + " v1=0 v1=1 v1=2 v1=3 "
                    "point v0=200 v1=3 none")
    assert sam_instance.parse(text) == sam


@pytest.mark.parametrize("seed", range(30))
def test_round_trip_is_exact(seed):
    sam = samples.sam_instances(np.random.default_rng(seed))
    text = sam_instance.serialise(sam)
    parsed = sam_instance.parse(text)
    assert sam_instance.serialise(parsed) == text
    n_words = len(text.split())
    assert n_words <= token_budget("sam_instance")
    if sum(map(len, sam_instance.units(sam))) <= token_budget("sam_instance"):  # nothing was cut
        assert parsed == sam
    else:  # a prefix of whole units: earlier points intact, the last kept point keeps a prefix of its instances
        last = len(parsed.points) - 1
        assert parsed.points[:last] == sam.points[:last]
        assert parsed.points[last].instances == sam.points[last].instances[: len(parsed.points[last].instances)]


def test_query_lists_containing_instances_smallest_first():
    masks = np.zeros((3, 224, 224), bool)
    masks[0] = True  # whole image
    masks[1, :112] = True  # top half
    masks[2, 100:110, 100:110] = True  # small square
    codes = np.arange(48).reshape(3, 16)
    sam = sam_instance.query(masks, codes, rng=0, n_points=50)
    assert len(sam.points) == 50
    for pt in sam.points:
        expected = [i for i in (2, 1, 0) if masks[i, pt.y, pt.x]]
        assert [inst.mask_tokens[0] // 16 for inst in pt.instances] == expected
    assert sam.points[0].instances[-1].bbox == (0, 0, 223, 223)
    assert sam_instance.query(masks, codes, rng=0) == sam_instance.query(masks, codes, rng=np.random.default_rng(0))
    assert len(sam_instance.query(masks, codes, rng=1).points) == 7


def test_no_instances_gives_none_per_point():
    sam = sam_instance.query(np.zeros((0, 224, 224), bool), np.zeros((0, 16)), rng=0)
    text = sam_instance.serialise(sam)
    assert text.split()[3::4] == ["none"] * 7 and len(text.split()) == 28
    assert sam_instance.parse(text) == sam
    assert sam_instance.serialise(SamInstances()) == "" and sam_instance.parse("") == SamInstances()


def test_truncation_keeps_whole_instances_and_never_an_empty_point():
    g = np.random.default_rng(0)
    sam = SamInstances(points=[SamPoint(y=i, x=i, instances=[samples.sam_instance(g) for _ in range(3)])
                               for i in range(7)])  # 7 * (3 + 63) = 462 tokens untruncated
    text = sam_instance.serialise(sam)
    parsed = sam_instance.parse(text)
    # 4 whole points (3 + 3 * 21 = 66 tokens each) + the 5th point's header and first instance (24)
    assert len(text.split()) == 4 * 66 + 24 == 288 <= token_budget("sam_instance")
    assert [len(p.instances) for p in parsed.points] == [3, 3, 3, 3, 1]
    assert all(p.instances for p in parsed.points)
    assert parsed.points[4].instances[0] == sam.points[4].instances[0]
    huge = SamInstances(points=[SamPoint(y=1, x=1, instances=[samples.sam_instance(g) for _ in range(20)])])
    assert len(sam_instance.parse(sam_instance.serialise(huge)).points[0].instances) == (289 - 3) // 21


@pytest.mark.parametrize("text, message", [
    ("point v0=1", "text ended"),
    ("point v0=1 v1=2", "expected 'polygon'"),
    ("point v0=1 v1=2 polygon v0=1 v1=1 v2=0 v3=5" + " v0=1" * 16, "x0 > x1"),
    ("point v1=1 v1=2 none", "point 0 y"),
    ("polygon v0=1 v1=2 none", "expected 'point'"),
    ("point v0=1 v1=2 none none", "expected 'point'"),
])
def test_parse_errors(text, message):
    with pytest.raises(ParseError, match=message):
        sam_instance.parse(text)


def test_bad_input_names_the_field():
    with pytest.raises(ValueError, match="mask_tokens"):
        SamInstance(bbox=(0, 0, 1, 1), mask_tokens=[0] * 15)
    with pytest.raises(ValueError, match="masks must be"):
        sam_instance.query(np.zeros((1, 100, 100), bool), np.zeros((1, 16)), rng=0)
    with pytest.raises(ValueError, match="needs an rng"):
        sam_instance.query(np.zeros((1, 224, 224), bool), np.zeros((1, 16)), rng=None)
