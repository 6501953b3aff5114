"""Decode, validate, normalise and re-encode one image: the only place ingestion touches pixels.

Content is validated by decoding (a Content-Type header or file extension is never trusted). Every mode
becomes 8-bit RGB; EXIF orientation is applied; the shorter side is resized to ``shorter_side`` while the
original (oriented) size is recorded; a decompression-bomb guard refuses images with too many pixels
before any pixel is decoded, and so do the geometry filters (ingest.filters: too small, aspect ratio);
an image longer than ingest.filters.max_aspect_ratio is centre-cropped to it (or refused).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy.fft import dctn

from fourm_core.config import IngestConfig

from .filters import geometry_crop
from .samples import SampleFailure

# The bomb guard is ingest.max_pixels, checked from the header right after Image.open and before any pixel
# is decoded. PIL has its own guard inside Image.open: an error above 2 x Image.MAX_IMAGE_PIXELS, and a
# warning above it (an exception where warnings are errors, e.g. `python -W error`); both are caught and
# become the per-sample reason "bomb". No global warnings filter is installed: that would be process-wide
# and is undone by anything that uses warnings.catch_warnings (pytest does, per test).

_RESAMPLE = Image.Resampling.BICUBIC
_ORIENTATION_TAG = 0x0112
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}  # these EXIF orientations swap width and height


@dataclass(frozen=True)
class ProcessedImage:
    """An image ready for the ``images`` artifact."""

    data: bytes  # encoded in ingest.image_format
    width: int
    height: int
    orig_width: int
    orig_height: int
    digest: str  # sha256 of the stored RGB pixels (format- and metadata-independent)
    phash: int  # 64-bit perceptual hash of the stored pixels (signed int64 range), for near-duplicate search
    cropped: bool = False  # centre-cropped to ingest.filters.max_aspect_ratio
    rgb: np.ndarray | None = None  # the stored pixels, kept only when asked for


def target_size(width: int, height: int, shorter_side: int) -> tuple[int, int]:
    """(w, h) with the shorter side equal to ``shorter_side`` and the aspect ratio kept (rounded)."""
    if width <= height:
        return shorter_side, max(1, round(height * shorter_side / width))
    return max(1, round(width * shorter_side / height)), shorter_side


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB; transparency is composited on white (alpha must not turn black)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16/32-bit grey: PIL's convert() clips at 255 (a 16-bit image turns white); scale instead.
        a = np.asarray(im).astype(np.float64)
        top = 65535.0 if mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        a = np.clip(a * (255.0 / top), 0, 255).round().astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if mode == "F":
        a = np.asarray(im).astype(np.float64)
        scale = 255.0 if a.max(initial=0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(a * scale, 0, 255).round().astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "L" and "transparency" in im.info:
        return _to_rgb(im.convert("LA"))
    # CMYK (incl. Adobe-inverted JPEGs, which PIL handles), L, 1, YCbCr, LAB, HSV, RGBX
    return im.convert("RGB")


def encode(im: Image.Image, cfg: IngestConfig) -> bytes:
    buf = io.BytesIO()
    if cfg.image_format == "jpeg":
        im.save(buf, "JPEG", quality=cfg.jpeg_quality)
    elif cfg.image_format == "png":
        im.save(buf, "PNG", compress_level=6)
    else:
        im.save(buf, "WEBP", quality=cfg.jpeg_quality, method=4)
    return buf.getvalue()


def phash(im: Image.Image) -> int:
    """pHash (Zauner 2010; the imagehash package's variant): grey 32x32, 2-D DCT-II, the 8x8 lowest
    frequencies against their median -> 64 bits, returned as a signed int64 (bit 63 is the sign)."""
    # grey first, then an integer box reduction (cheap) to about 32 px before the exact 32x32 box resize:
    # together about half the CPU of one box resize of the RGB image
    grey = im.convert("L")
    factor = min(grey.size) // 32
    if factor > 1:
        grey = grey.reduce(factor)
    grey = np.asarray(grey.resize((32, 32), Image.Resampling.BOX), dtype=np.float64)
    low = dctn(grey, type=2, norm="ortho")[:8, :8]
    bits = (low > np.median(low)).ravel()
    return int(np.packbits(bits).view(">i8")[0])


def _centre_crop(im: Image.Image, keep: tuple[int, int], orig: tuple[int, int]) -> Image.Image:
    """Crop ``im`` (possibly draft-reduced from ``orig``) to the centred ``keep`` box given in original pixels."""
    sx, sy = im.width / orig[0], im.height / orig[1]
    w, h = max(1, round(keep[0] * sx)), max(1, round(keep[1] * sy))
    x0, y0 = (im.width - w) // 2, (im.height - h) // 2
    return im.crop((x0, y0, x0 + w, y0 + h))


def _finish(im: Image.Image, orig: tuple[int, int], cfg: IngestConfig, keep_rgb: bool,
            crop: tuple[int, int] | None = None) -> ProcessedImage:
    """Crop (aspect-ratio bound), resize an RGB image to the stored size, digest its pixels and encode it."""
    if crop is not None:
        im = _centre_crop(im, crop, orig)
    size = target_size(*(crop or orig), cfg.shorter_side)
    if im.size != size:
        # reducing_gap: PIL first shrinks by an integer factor with a box filter, then resamples: much
        # faster for big downscales at no visible cost.
        im = im.resize(size, _RESAMPLE, reducing_gap=3.0)
    pixels = im.tobytes()
    digest = hashlib.sha256(pixels).hexdigest()
    rgb = np.frombuffer(pixels, np.uint8).reshape(size[1], size[0], 3) if keep_rgb else None
    return ProcessedImage(encode(im, cfg), size[0], size[1], orig[0], orig[1], digest, phash(im), crop is not None, rgb)


def process_bytes(data: bytes, cfg: IngestConfig, keep_rgb: bool = False) -> ProcessedImage:
    """Validate and normalise an encoded image. Raises SampleFailure with a stable reason code."""
    if not data:
        raise SampleFailure("empty_body", "zero bytes")
    try:
        im = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SampleFailure("bomb", str(exc)) from None
    except UnidentifiedImageError:
        head = data[:32].lstrip().lower()
        kind = "HTML" if head.startswith((b"<!doctype", b"<html")) else f"{len(data)} bytes"
        raise SampleFailure("not_image", f"not a known image format ({kind})") from None
    except Exception as exc:  # corrupt headers raise all sorts (SyntaxError, ValueError, struct.error)
        raise SampleFailure("decode_error", f"{type(exc).__name__}: {exc}") from None
    w, h = im.size
    if w <= 0 or h <= 0:
        raise SampleFailure("decode_error", f"image size {w}x{h}")
    if w * h > cfg.max_pixels:
        raise SampleFailure("bomb", f"{w}x{h} = {w * h} pixels > ingest.max_pixels = {cfg.max_pixels}")
    try:
        orientation = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # a broken EXIF block must not cost the image; it just stays unrotated
        orientation = 1
    orig = (h, w) if orientation in _TRANSPOSED_ORIENTATIONS else (w, h)
    crop = geometry_crop(*orig, cfg.filters)  # from the header: a refused image is never decoded
    try:
        if im.format == "JPEG":
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the target is that much smaller (DCT scaling):
            # several times faster, and still never smaller than the stored size.
            tw, th = target_size(w, h, cfg.shorter_side)
            im.draft(None, (tw, th))
        im.load()
        if orientation != 1:
            im = ImageOps.exif_transpose(im)
        im = _to_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SampleFailure("bomb", str(exc)) from None
    except Exception as exc:  # truncated data: OSError; other corrupt streams: SyntaxError, ValueError, ...
        raise SampleFailure("decode_error", f"{type(exc).__name__}: {exc}") from None
    return _finish(im, orig, cfg, keep_rgb, crop)


def process_array(rgb: np.ndarray, cfg: IngestConfig, keep_rgb: bool = False) -> ProcessedImage:
    """Normalise an in-memory image (H x W x 3 uint8, or grey/alpha) from an offline source."""
    if rgb.dtype != np.uint8:
        raise SampleFailure("decode_error", f"expected uint8 pixels, got {rgb.dtype}")
    im = Image.fromarray(rgb)
    h, w = rgb.shape[:2]
    if w * h > cfg.max_pixels:
        raise SampleFailure("bomb", f"{w}x{h} pixels > ingest.max_pixels = {cfg.max_pixels}")
    crop = geometry_crop(w, h, cfg.filters)
    return _finish(_to_rgb(im), (w, h), cfg, keep_rgb, crop)
