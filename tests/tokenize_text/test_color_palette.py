"""color_palette serialiser: k drawn from the stored palettes, exact round trip, 7 colours fit, errors."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tokenize_text import samples
from tokenize_stage.text.serialise import ParseError, color_palette, token_budget
from fourm_core.structured import ColorPalette, ColorPaletteSet


def test_example():
    pal = ColorPalette(colors=[(255, 0, 0), (12, 34, 56)])
    assert color_palette.serialise(pal) == "v1=2 v0=255 v0=0 v0=0 v0=12 v0=34 v0=56"


@pytest.mark.parametrize("seed", range(20))
def test_round_trip_is_exact(seed):
    g = np.random.default_rng(seed)
    pals = samples.palette_set(g)
    text = color_palette.serialise(pals, g)
    parsed = color_palette.parse(text)
    assert parsed in pals.palettes
    assert color_palette.serialise(parsed) == text


def test_k_is_drawn_from_the_stored_sizes():
    full = ColorPaletteSet(palettes=[ColorPalette(colors=[(k, k, k)] * k) for k in range(1, 8)])
    drawn = {len(color_palette.parse(color_palette.serialise(full, seed)).colors) for seed in range(200)}
    assert drawn == set(range(1, 8))
    assert color_palette.serialise(full, None).startswith("v1=7 ")  # no rng: the largest palette
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    assert color_palette.serialise(full, g1) == color_palette.serialise(full, g2)


def test_seven_colours_fit_the_budget():
    pal = ColorPalette(colors=[(255, 255, 255)] * 7)
    assert len(color_palette.serialise(pal).split()) == 22 == token_budget("color_palette")


@pytest.mark.parametrize("text, message", [
    ("v1=8 v0=1 v0=1 v0=1", "k=8"),
    ("v1=0", "k=0"),
    ("v1=1 v0=1 v0=2", "text ended"),
    ("v1=1 v0=1 v0=2 v0=256", "above 255"),
    ("v1=1 v0=1 v0=2 v0=3 v0=4", "unexpected 'v0=4'"),
    ("v0=1 v0=1 v0=2 v0=3", "palette size"),
])
def test_parse_errors(text, message):
    with pytest.raises(ParseError, match=message):
        color_palette.parse(text)


def test_bad_input():
    with pytest.raises(ValueError, match="colors"):
        ColorPalette(colors=[(0, 0, 0)] * 8)
    with pytest.raises(ValueError, match="256"):
        ColorPalette(colors=[(0, 256, 0)])
    with pytest.raises(ValueError, match="distinct sizes"):
        ColorPaletteSet(palettes=[ColorPalette(colors=[(0, 0, 0)]), ColorPalette(colors=[(1, 1, 1)])])
