"""metadata serialiser: binning edges, thresholds, chunk shuffling, truncation, round trip, errors."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tokenize_text import samples
from tokenize_stage.text.serialise import ParseError, metadata, token_budget
from tokenize_stage.text.serialise.metadata import BY_NAME, METADATA_TYPES, N_BINS, dequantise, quantise
from fourm_core.structured import Metadata


def q(name, value):
    return quantise(BY_NAME[name], value)


def test_type_ids_follow_the_facts_table():
    assert [t.name for t in METADATA_TYPES][:3] == ["original_width", "original_height", "caption_n_chars"]
    assert BY_NAME["semantic_diversity"].type_id == 16 and BY_NAME["aesthetic_score"].type_id == 20
    assert (BY_NAME["geometric_complexity"].vmin, BY_NAME["geometric_complexity"].vmax) == (0, 0.75)


def test_example_in_type_order_without_rng():
    m = Metadata(original_width=640, brightness=127.5, watermark_score=0.7, aesthetic_score=5.0)
    assert metadata.serialise(m) == "v1=0 v0=20 v1=10 v0=24 v1=19 v0=1 v1=20 v0=1"


def test_sizes_are_divided_by_32_and_clipped():
    assert [q("original_width", v) for v in (0, 31, 32, 640, 31_999, 10**6)] == [0, 0, 1, 20, 999, 999]


def test_counts_are_clipped_to_999():
    assert [q("n_humans", v) for v in (-3, 0, 7, 999, 1000, 5000)] == [0, 0, 7, 999, 999, 999]


def test_float_bins_edges_and_clipping():
    # the reference's int(frac * 49): bins are 1/49 of the range wide and only vmax reaches bin 49
    assert [q("brightness", v) for v in (-10, 0, 5.19, 5.21, 254.9, 255, 400)] == [0, 0, 0, 1, 48, 49, 49]
    assert [q("colorfulness", v) for v in (3.06, 3.07, 147.0, 149.99, 150.0)] == [0, 1, 48, 48, 49]
    assert [q("occlusion_score", v) for v in (0.0, 0.0052, 0.2499, 0.25, 1.0)] == [0, 1, 48, 49, 49]
    for t in METADATA_TYPES:
        if t.kind == "bins":  # all 50 bins are reachable and representatives bin back to themselves
            reps = [dequantise(t, b) for b in range(N_BINS)]
            assert [quantise(t, r) for r in reps] == list(range(N_BINS))
            assert {quantise(t, v) for v in np.linspace(t.vmin, t.vmax, 1001)} == set(range(N_BINS))


def test_thresholds():
    assert [q("watermark_score", v) for v in (0.0, 0.4999, 0.5, 1.0)] == [0, 0, 1, 1]
    assert [q("aesthetic_score", v) for v in (1.0, 4.4999, 4.5, 5.4999, 5.5, 9.0)] == [0, 0, 1, 1, 2, 2]
    for name, n in (("watermark_score", 2), ("aesthetic_score", 3)):
        assert [q(name, dequantise(BY_NAME[name], b)) for b in range(n)] == list(range(n))


@pytest.mark.parametrize("seed", range(30))
def test_round_trip_and_error_bounds(seed):
    g = np.random.default_rng(seed)
    m = samples.metadata(g, p_present=0.6)
    text = metadata.serialise(m, np.random.default_rng(seed))
    parsed = metadata.parse(text)
    present = [t for t in METADATA_TYPES if getattr(m, t.name) is not None]
    if len(present) <= token_budget("metadata") // 2:  # untruncated: same fields, same shuffle
        assert metadata.serialise(parsed, np.random.default_rng(seed)) == text
    words = text.split()
    text_chunks = [f"{a} {b}" for a, b in zip(words[::2], words[1::2])]
    assert sorted(text_chunks) == sorted(metadata.chunks(parsed))  # same chunks even when truncated
    for t in METADATA_TYPES:
        got, raw = getattr(parsed, t.name), getattr(m, t.name)
        if got is None:
            continue
        assert quantise(t, got) == quantise(t, raw)
        if t.kind == "size" and raw < 32_000:
            assert abs(got - raw) <= t.max_error
        elif t.kind == "count" and raw <= 999:
            assert got == raw
        elif t.kind == "bins" and t.vmin <= raw <= t.vmax:
            assert abs(got - raw) <= t.max_error + 1e-9


def test_shuffle_follows_the_rng():
    m = Metadata(**{t.name: 1 for t in METADATA_TYPES[:10]})
    orders = {metadata.serialise(m, seed) for seed in range(10)}
    assert len(orders) > 5
    assert metadata.serialise(m, 3) == metadata.serialise(m, np.random.default_rng(3))


def test_truncation_keeps_20_whole_chunks():
    """As the reference: 20 chunks fill all 40 slots and the masking has no room left for [EOS]."""
    full = Metadata(**{t.name: 1 for t in METADATA_TYPES})
    chunks = metadata.chunks(full, 0)
    assert len(chunks) == 20 == token_budget("metadata") // 2
    assert all(len(c.split()) == 2 for c in chunks)
    assert len(metadata.serialise(full).split()) == 40
    assert len(metadata.parse(metadata.serialise(full, 0)).model_dump(exclude_none=True)) == 20
    assert metadata.serialise(Metadata()) == "" and metadata.parse("") == Metadata()


@pytest.mark.parametrize("text, message", [
    ("v1=21 v0=1", "unknown metadata type id 21"),
    ("v1=5 v0=1 v1=5 v0=2", "appears twice"),
    ("v1=9 v0=50", "colorfulness: value 50"),
    ("v1=19 v0=2", "watermark_score: value 2"),
    ("v1=3", "text ended"),
    ("v0=3 v0=1", "metadata type id"),
])
def test_parse_errors(text, message):
    with pytest.raises(ParseError, match=message):
        metadata.parse(text)


def test_bad_input_names_the_field():
    with pytest.raises(ValueError, match="n_humans"):
        Metadata(n_humans=2.5)
    with pytest.raises(ValueError, match="original_width"):
        Metadata(original_width=-1)
    with pytest.raises(ValueError, match="entropy"):
        Metadata(entropy=float("nan"))
    with pytest.raises(ValueError, match="bogus"):
        Metadata(bogus=1)
