"""The stages' image decode gives Pillow's pixels and Pillow's errors, whichever decoder runs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fourm_core import image_decode
from fourm_core.image_decode import decode_image, jpeg_frame
from pseudolabel.testing import PHOTOS, photo, synthetic_image


def _pillow(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _encode(arr: np.ndarray, fmt: str = "JPEG", mode: str | None = None, **kw) -> bytes:
    im = Image.fromarray(arr)
    if mode:
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _images() -> list[np.ndarray]:
    photos = [photo(p, 96) for p in PHOTOS[:2]]
    return photos + [synthetic_image(3, 64)[:37, :51], synthetic_image(5, 64)]


JPEG_VARIANTS = {
    "q95 (ingest's default)": dict(quality=95),
    "q90 4:2:0": dict(quality=90),
    "q50 4:2:2": dict(quality=50, subsampling=1),
    "q95 4:4:4": dict(quality=95, subsampling=0),
    "q75 progressive": dict(quality=75, progressive=True),
    "greyscale": dict(quality=85, mode="L"),
    "restart markers": dict(quality=80, restart_marker_blocks=2),
}


@pytest.mark.parametrize("variant", JPEG_VARIANTS)
def test_jpegs_decode_to_pillows_pixels_through_opencv(variant, monkeypatch):
    kw = dict(JPEG_VARIANTS[variant])
    mode = kw.pop("mode", None)
    calls = []
    real = image_decode._opencv
    monkeypatch.setattr(image_decode, "_opencv", lambda d: (calls.append(1), real(d))[1])
    for arr in _images():
        data = _encode(arr, mode=mode, **kw)
        got = decode_image(data)
        assert got.dtype == np.uint8 and got.ndim == 3 and got.shape[2] == 3
        np.testing.assert_array_equal(got, _pillow(data))
    assert len(calls) == len(_images())  # the fast path ran, not the fallback


def test_a_uint8_buffer_decodes_like_its_bytes():
    data = _encode(synthetic_image(6, 64), quality=90)
    np.testing.assert_array_equal(decode_image(np.frombuffer(data, np.uint8)), _pillow(data))
    np.testing.assert_array_equal(decode_image(memoryview(data)), _pillow(data))
    cut = np.frombuffer(data[: len(data) // 2], np.uint8)
    with pytest.raises(OSError, match="(?i)truncated"):  # Pillow's error, not OpenCV's grey fill
        decode_image(cut)


def test_exif_orientation_is_not_applied_as_with_pillow():
    arr = synthetic_image(2, 64)[:40, :64]
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW" tag: Pillow's plain decode ignores it, so must we
    data = _encode(arr, quality=90, exif=exif.tobytes())
    got = decode_image(data)
    assert got.shape == (40, 64, 3)
    np.testing.assert_array_equal(got, _pillow(data))


@pytest.mark.parametrize("fmt,kw", [("PNG", {}), ("WEBP", {"quality": 80}), ("JPEG", {"mode": "CMYK"})])
def test_other_formats_go_through_pillow(fmt, kw, monkeypatch):
    monkeypatch.setattr(image_decode, "_opencv", lambda d: pytest.fail("OpenCV must not take this input"))
    arr = synthetic_image(1, 48)
    data = _encode(arr, fmt, **kw)
    got = decode_image(data)
    np.testing.assert_array_equal(got, _pillow(data))
    assert got.flags.writeable  # as from OpenCV: torch.from_numpy warns of read-only arrays


def test_truncated_jpeg_fails_as_pillow_fails():
    data = _encode(synthetic_image(4, 64), quality=90)
    cut = data[: len(data) // 2]
    assert jpeg_frame(cut) is not None  # the header is intact: only the missing end tells
    with pytest.raises(OSError, match="truncated"):
        _pillow(cut)
    with pytest.raises(OSError, match="truncated"):
        decode_image(cut)


def test_unknown_bytes_name_their_size():
    with pytest.raises(Image.UnidentifiedImageError, match=r"not a known image format \(10 bytes\)"):
        decode_image(b"not a jpeg")


def test_oversized_frame_is_left_to_pillows_bomb_check(monkeypatch):
    data = _encode(synthetic_image(0, 64), quality=90)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 - 1)
    monkeypatch.setattr(image_decode, "_opencv", lambda d: pytest.fail("OpenCV must not take this input"))
    with pytest.warns(Image.DecompressionBombWarning):
        decode_image(data)


def test_frame_header_is_read_past_app_segments():
    exif = Image.Exif()
    exif[0x010E] = "x" * 3000  # a long APP1 before the frame header
    data = _encode(synthetic_image(0, 64)[:30, :50], quality=90, exif=exif.tobytes())
    marker, precision, height, width, comps = jpeg_frame(data)
    assert (marker, precision, height, width, comps) == (0xC0, 8, 30, 50, 3)
    assert jpeg_frame(b"\x89PNG\r\n") is None
