"""Test images, made in memory: valid ones in every tricky mode, and broken ones."""

from __future__ import annotations

import io
import tarfile
import struct
import zlib
from functools import lru_cache

import numpy as np
from PIL import Image


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def gradient(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A smooth colour image, different per seed (so content digests differ)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    a, b, c = rng.uniform(0.2, 1.0, 3)
    rgb = np.stack([(x / w) * 255 * a, (y / h) * 255 * b, ((x + y) / (w + h)) * 255 * c], axis=2)
    return rgb.astype(np.uint8)


def jpeg(w: int = 160, h: int = 120, seed: int = 0, quality: int = 90) -> bytes:
    return _encode(Image.fromarray(gradient(w, h, seed)), "JPEG", quality=quality)


def png(w: int = 120, h: int = 90, seed: int = 1) -> bytes:
    return _encode(Image.fromarray(gradient(w, h, seed)), "PNG")


def webp(w: int = 100, h: int = 140, seed: int = 2) -> bytes:
    return _encode(Image.fromarray(gradient(w, h, seed)), "WEBP", quality=90)


def cmyk_jpeg(w: int = 80, h: int = 60) -> bytes:
    """Pure red in CMYK (C=0, M=255, Y=255, K=0)."""
    return _encode(Image.new("CMYK", (w, h), (0, 255, 255, 0)), "JPEG", quality=95)


def gray16_png(w: int = 128, h: int = 64) -> bytes:
    """A 16-bit grey ramp 0..65535 left to right (PIL opens it as mode I;16)."""
    ramp = np.tile(np.linspace(0, 65535, w).astype(np.uint16), (h, 1))
    im = Image.fromarray(ramp)
    assert im.mode.startswith("I;16"), im.mode
    return _encode(im, "PNG")


def rgba_png(w: int = 64, h: int = 64) -> bytes:
    """Fully transparent black: must come out white, not black."""
    return _encode(Image.new("RGBA", (w, h), (0, 0, 0, 0)), "PNG")


def palette_png(w: int = 64, h: int = 48) -> bytes:
    im = Image.fromarray(gradient(w, h, 5)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return _encode(im, "PNG")


def exif_rotated_jpeg(w: int = 200, h: int = 100) -> bytes:
    """Stored landscape 200x100 with EXIF orientation 6 (rotate 90 CW): shown as portrait 100x200."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(Image.fromarray(gradient(w, h, 9)), "JPEG", exif=exif.tobytes(), quality=90)


def truncated_jpeg() -> bytes:
    data = jpeg(320, 240, seed=11)
    return data[: len(data) // 2]


HTML = b"<!DOCTYPE html><html><head><title>Not found</title></head><body>nothing here</body></html>"


@lru_cache(maxsize=1)
def bomb_png(side: int = 30000) -> bytes:
    """A valid 1-bit PNG of side x side pixels that is only ~100 KB (zeros compress well)."""
    raw_row = b"\x00" + b"\x00" * ((side + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    parts = [comp.compress(raw_row * 1000) for _ in range(side // 1000)]
    parts.append(comp.compress(raw_row * (side % 1000)))
    parts.append(comp.flush())
    idat = b"".join(parts)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def write_tar(path, members: dict[str, bytes]) -> None:
    """A plain tar with the given members (name -> bytes), in order."""
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
