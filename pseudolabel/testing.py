"""Test/bench helper: commit small `images` shards (docs/data-format.md) through run_unit, without ingest.

Images: scikit-image's public-domain photos plus synthetic shapes, JPEG-encoded, with captions.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pyarrow as pa
from PIL import Image

from fourm_core import ArtifactStore, Unit, UnitOutput, run_unit

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def synthetic_image(i: int, size: int = 256) -> np.ndarray:
    """A deterministic scene: two-tone background, a rectangle and a disc (uint8 size×size×3)."""
    rng = np.random.default_rng(i)
    img = np.zeros((size, size, 3), np.uint8)
    img[: size // 2] = rng.integers(0, 256, 3)
    img[size // 2:] = rng.integers(0, 256, 3)
    x0, y0 = rng.integers(0, size // 2, 2)
    img[y0: y0 + size // 3, x0: x0 + size // 3] = rng.integers(0, 256, 3)
    yy, xx = np.mgrid[:size, :size]
    cx, cy = rng.integers(size // 4, 3 * size // 4, 2)
    img[(yy - cy) ** 2 + (xx - cx) ** 2 < (size // 6) ** 2] = rng.integers(0, 256, 3)
    return img


def photo(name: str, shorter: int = 256) -> np.ndarray:
    import skimage.data

    im = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    s = shorter / min(im.size)
    return np.asarray(im.resize((max(1, round(im.size[0] * s)), max(1, round(im.size[1] * s))), Image.BILINEAR))


def encode(img: np.ndarray, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, quality=95)
    return buf.getvalue()


def images_table(samples: list[tuple[str, np.ndarray | bytes, str | None]]) -> pa.Table:
    rows = []
    for key, img, caption in samples:
        data = img if isinstance(img, bytes) else encode(img)
        h, w = (img.shape[:2] if not isinstance(img, bytes) else (0, 0))
        rows.append({"sample_key": key, "image": data, "width": w, "height": h, "orig_width": w * 2,
                     "orig_height": h * 2, "caption": caption, "source": "test", "url": None,
                     "digest": hashlib.sha256(data).hexdigest()})
    schema = pa.schema([("sample_key", pa.string()), ("image", pa.binary()), ("width", pa.int32()),
                        ("height", pa.int32()), ("orig_width", pa.int32()), ("orig_height", pa.int32()),
                        ("caption", pa.string()), ("source", pa.string()), ("url", pa.string()),
                        ("digest", pa.string())])
    return pa.Table.from_pylist(rows, schema=schema)


def commit_images(store: ArtifactStore, dataset: str, shard: int, samples) -> None:
    table = images_table(samples)
    unit = Unit(stage="test-ingest", dataset=dataset, artifacts=["images"], shard=shard, code_version="test/1",
                config={"keys": table.column("sample_key").to_pylist()})
    run_unit(store, unit, lambda: UnitOutput({"images": table}))


def demo_samples(shard: int, n: int = 4, size: int = 256, photos: bool = True) -> list:
    out = []
    for i in range(n):
        key = f"s{shard:02d}-{i:03d}"
        if photos and i < len(PHOTOS):
            out.append((key, photo(PHOTOS[(i + shard) % len(PHOTOS)], size), f"A photo of {PHOTOS[i]}. Public domain."))
        else:
            out.append((key, synthetic_image(shard * 1000 + i, size), f"Synthetic shapes {i}."))
    return out
