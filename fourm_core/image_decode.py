"""Encoded image bytes -> uint8 H×W×3 RGB: the one image decode of every stage (pseudo-labels, fused tokens,
training inputs, evaluation), so all of them see the same pixels.

Why two decoders: the pseudo-label stage decodes a call's next batch in a thread of the labeler's actor while the model labels
the current one. Pillow parses a JPEG's markers in Python and so holds the GIL for much of each image; a tiny
model's forward is thousands of short torch ops, each releasing and re-taking the GIL, and beside a Pillow decode
thread it ran 17-46 % slower (``bench/bench_model_interference.py``). OpenCV's ``imdecode`` is one C call that
releases the GIL for the whole image: the model beside it runs as fast as alone, and the decode itself is ~40 %
cheaper. Both link libjpeg-turbo, whose integer IDCT and upsampling are exact, so for the JPEGs OpenCV takes here
the pixels are byte-identical to Pillow's (``tests/core/test_image_decode.py`` checks qualities,
subsamplings, progressive, greyscale, odd sizes, EXIF orientation); everything else (PNG, WebP, CMYK or 12-bit
JPEGs, truncated files, decompression bombs) goes through Pillow, whose result and errors are the reference.
"""

from __future__ import annotations

import io
import struct

import numpy as np

_SOI, _EOI = b"\xff\xd8", b"\xff\xd9"
# Start-of-frame markers OpenCV decodes like Pillow here: baseline, extended sequential, progressive (Huffman).
_SOF_HUFFMAN = {0xC0, 0xC1, 0xC2}
# Markers without a length field (TEM, RSTn): skipped as two bytes.
_STANDALONE = {0x01, *range(0xD0, 0xD8)}


def _bytes_view(data) -> bytes | memoryview:
    """``data`` (bytes, or any contiguous buffer: the training loader passes uint8 arrays) as indexable bytes."""
    return data if isinstance(data, bytes) else memoryview(data).cast("B")


def jpeg_frame(data) -> tuple[int, int, int, int, int] | None:
    """The frame header of a JPEG: (SOF marker, precision, height, width, components), or None when ``data`` is
    not a JPEG whose header can be read (the caller then lets Pillow decide)."""
    data = _bytes_view(data)
    if data[:2] != _SOI:
        return None
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn (not DHT, JPG, DAC)
            if pos + 10 > n:
                return None
            precision, height, width, comps = struct.unpack_from(">BHHB", data, pos + 4)
            return marker, precision, height, width, comps
        if marker == 0xDA:  # start of scan before any frame header: malformed
            return None
        pos += 2 + length
    return None


def _ends_complete(data: bytes | memoryview) -> bool:
    """Whether the bytes end with the end-of-image marker (zero padding after it allowed): a cut file does not."""
    end = len(data)
    while end and data[end - 1] == 0:
        end -= 1
    return end >= 2 and data[end - 2:end] == _EOI


def _opencv_takes(data: bytes | memoryview) -> bool:
    """Whether OpenCV decodes ``data`` to exactly Pillow's pixels: a complete (ends in EOI), 8-bit, Huffman-coded
    JPEG with 1 or 3 components, no larger than Pillow would open without its decompression-bomb warning."""
    from PIL import Image

    frame = jpeg_frame(data)
    if frame is None or not _ends_complete(data):
        return False
    marker, precision, height, width, comps = frame
    limit = Image.MAX_IMAGE_PIXELS
    return (marker in _SOF_HUFFMAN and precision == 8 and comps in (1, 3) and height > 0 and width > 0
            and (limit is None or height * width <= limit))


def _opencv(data) -> np.ndarray | None:
    import cv2

    # RGB straight from libjpeg (no BGR pass through cvtColor, which would start OpenCV's own thread pool)
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)


def _pillow(data) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        # Pillow's message names the address of a temporary buffer: the recorded sample error would differ per run
        raise UnidentifiedImageError(f"not a known image format ({len(data)} bytes)") from None
    with im:
        # a writable copy, like OpenCV's result (np.asarray of an Image is read-only, which torch.from_numpy warns of)
        return np.array(im.convert("RGB"))


def decode_image(data) -> np.ndarray:
    """Encoded JPEG/PNG/WebP bytes (or a uint8 buffer of them) -> a writable uint8 H×W×3 RGB array (Pillow's
    pixels; OpenCV's where they are the same, above).

    Raises what Pillow raises for bytes it cannot decode (an unknown format names the byte count)."""
    if _opencv_takes(_bytes_view(data)):
        rgb = _opencv(data)
        if rgb is not None:
            return rgb
    return _pillow(data)
