"""Image normalisation details not covered through the HTTP fault matrix."""

from __future__ import annotations

import io
import warnings

import pytest
from PIL import Image

from fourm_core.config import IngestConfig
from ingest_stage.imageproc import process_array, process_bytes, target_size
from ingest_stage.samples import SampleFailure

from . import media


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def test_target_size_keeps_aspect():
    assert target_size(640, 480, 256) == (341, 256)
    assert target_size(480, 640, 256) == (256, 341)
    assert target_size(100, 50, 256) == (512, 256)  # small images are brought up to the contract too


@pytest.mark.parametrize("im", [
    Image.new("LA", (40, 30), (0, 0)),
    Image.new("L", (40, 30), 255),
    Image.new("1", (40, 30), 1),
])
def test_grey_and_alpha_modes_become_white_rgb(im):
    out = process_bytes(_png(im), IngestConfig(shorter_side=16, filters={"min_side": 0}), keep_rgb=True)
    assert out.rgb.shape == (16, 21, 3) and out.rgb.min() >= 250


def test_palette_with_transparency_is_composited_on_white():
    im = Image.new("P", (20, 20), 0)
    im.putpalette([0, 0, 0] + [255, 0, 0] * 255)
    im.info["transparency"] = 0
    out = process_bytes(_png(im), IngestConfig(shorter_side=16, filters={"min_side": 0}), keep_rgb=True)
    assert out.rgb.min() >= 250


def test_bomb_guard_by_config_before_decoding():
    with pytest.raises(SampleFailure) as err:
        process_bytes(media.jpeg(200, 200), IngestConfig(max_pixels=10_000))
    assert err.value.reason == "bomb" and "ingest.max_pixels" in err.value.detail


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_header_size_is_checked_before_decoding():
    # 10000 x 10000 (100 M pixels) with the default limit (PIL's 89.5 M): refused from the header alone
    with pytest.raises(SampleFailure) as err:
        process_bytes(media.bomb_png(10_000), IngestConfig())
    assert err.value.reason == "bomb" and "100000000 pixels" in err.value.detail


def test_pil_bomb_warning_as_error_becomes_a_sample_error():
    # where warnings are errors, PIL's DecompressionBombWarning is raised inside Image.open: still a "bomb"
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(SampleFailure) as err:
            process_bytes(media.bomb_png(10_000), IngestConfig(max_pixels=10**9))
    assert err.value.reason == "bomb" and "decompression bomb" in err.value.detail


def test_pil_bomb_error_becomes_a_sample_error():
    # above 2 x PIL's limit, PIL raises DecompressionBombError in Image.open, before our own check runs
    with pytest.raises(SampleFailure) as err:
        process_bytes(media.bomb_png(), IngestConfig(max_pixels=10**10))
    assert err.value.reason == "bomb" and "decompression bomb" in err.value.detail


def test_digest_is_of_pixels_not_of_the_file():
    rgb = media.gradient(64, 48)
    a = process_bytes(_png(Image.fromarray(rgb)), IngestConfig(shorter_side=48))
    b = process_array(rgb, IngestConfig(shorter_side=48))
    assert a.digest == b.digest  # the same pixels, whatever the container
