"""parse(text, strict=False) for model outputs: stop at [EOS], ignore control tokens, drop broken units."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tokenize_text import samples
from tokenize_stage.text.serialise import ParseError, color_palette, det, human_poses, metadata, sam_instance
from fourm_core.structured import ColorPalette, Metadata


def test_det_drops_the_broken_box_and_stops_at_eos():
    text = "v0=1 v1=2 v2=3 v3=4 dog v0=5 v1=6 unicorn v0=7 v1=8 v2=9 v3=10 [S_2] cat [EOS] v0=1 v1=1 v2=2 v3=2 cow"
    with pytest.raises(ParseError):
        det.parse(text)
    parsed = det.parse(text, strict=False)
    assert [b.class_name for b in parsed.boxes] == ["dog", "cat"]


def test_metadata_drops_repeats_and_broken_chunks():
    parsed = metadata.parse("v1=5 v0=2 v1=5 v0=3 v1=99 v1=9 v0=60 v1=13 v0=10 [PAD]", strict=False)
    assert parsed == Metadata(n_humans=2, entropy=metadata.dequantise(metadata.BY_NAME["entropy"], 10))


def test_human_poses_drops_the_broken_person():
    g = np.random.default_rng(0)
    good = human_poses.serialise(samples.human_poses(g, n=2), g)
    words = good.split()
    broken = " ".join(words[:39] + words[39:50] + words[52:])  # second person loses two codes
    assert len(human_poses.parse(broken, strict=False).persons) == 1
    assert human_poses.parse("none [EOS] human", strict=False).persons == []


def test_sam_instance_drops_the_broken_point():
    g = np.random.default_rng(0)
    text = sam_instance.serialise(samples.sam_instances(g, max_per_point=1))
    words = text.split()
    second_point = [i for i, w in enumerate(words) if w == "point"][1]
    broken = " ".join(words[: second_point + 2] + words[second_point + 3:])  # point 1 loses its x
    assert len(sam_instance.parse(broken, strict=False).points) == 6


def test_color_palette_keeps_complete_colours():
    assert color_palette.parse("v1=3 v0=1 v0=2 v0=3 v0=4 v0=5 [EOS]", strict=False) == ColorPalette(colors=[(1, 2, 3)])
    with pytest.raises(ParseError, match="no complete colour"):
        color_palette.parse("v1=3 v0=1", strict=False)


@pytest.mark.parametrize("module", [det, metadata, human_poses, sam_instance, color_palette])
def test_lenient_equals_strict_on_valid_text(module):
    g = np.random.default_rng(1)
    make = {det: samples.detections, metadata: samples.metadata, human_poses: samples.human_poses,
            sam_instance: samples.sam_instances, color_palette: samples.palette_set}[module]
    for _ in range(5):
        text = module.serialise(make(g), g)
        assert module.parse(text + " [EOS] [PAD]", strict=False) == module.parse(text)
