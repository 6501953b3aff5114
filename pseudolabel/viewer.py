"""Render one sample and every committed pseudo label of it into a single PNG (matplotlib, Agg).

Panels: the image; depth (turbo colour map, near = warm for depth-like outputs as stored); normals
(RGB = (n + 1) / 2); semantic map (fixed 134-colour palette, legend of the largest classes); Canny
edges; SAM instances as coloured overlays and SAM edges; detection boxes with class names and scores;
persons as boxes (a 2-D skeleton needs the SMPL body model, which is not part of this release); palettes
k = 1…7 as swatch rows; feature maps as their first 3 PCA components; metadata and the other scalar labels
as text.
"""

from __future__ import annotations

import io
import textwrap

import numpy as np

from fourm_core import ArtifactStore
from fourm_core.coco import COCO_PANOPTIC_CLASSES
from fourm_core.image_decode import decode_image

from . import codecs


def _row(store: ArtifactStore, dataset: str, artifact: str, key: str) -> dict | None:
    import pyarrow.compute as pc

    for shard in store.committed_shards(dataset, artifact):
        t = store.read_table(dataset, artifact, shard)
        hit = t.filter(pc.equal(t.column("sample_key"), key))
        if hit.num_rows:
            return hit.to_pylist()[0]
    return None


def semseg_palette() -> np.ndarray:
    """134 distinct colours; 0 (none) is black."""
    rng = np.random.default_rng(7)
    pal = rng.integers(40, 256, (134, 3)).astype(np.uint8)
    pal[0] = 0
    return pal


def _pca_rgb(feat: np.ndarray) -> np.ndarray:
    """g×g×C -> g×g×3 in [0, 1] from the first 3 principal components."""
    g = feat.shape[0]
    x = feat.reshape(-1, feat.shape[-1]).astype(np.float64)
    x -= x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    y = x @ vt[:3].T
    y = (y - y.min(0)) / np.maximum(np.ptp(y, 0), 1e-9)
    return y.reshape(g, g, -1)


def _instance_overlay(rgb: np.ndarray, row: dict) -> np.ndarray:
    """The image with every SAM instance tinted in its own colour (largest first, small ones on top)."""
    import cv2

    from .labelers.sam import instance_masks

    out = rgb.astype(np.float32)
    pal = semseg_palette()
    masks = sorted(instance_masks(row), key=lambda m: -int(m.sum()))
    for i, m in enumerate(masks):
        if m.shape != rgb.shape[:2]:  # low-resolution mask frame
            m = cv2.resize(m.astype(np.uint8), (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
        out[m] = 0.45 * out[m] + 0.55 * pal[1 + i % 133]
    return out.astype(np.uint8)


def _boxes(boxes: list[tuple[list[float], str]], color: str) -> list[tuple[str, tuple, dict]]:
    """Overlay specs: normalised xyxy + caption -> ("box", (x0, y0, x1, y1, caption), style)."""
    return [("box", (*xyxy, caption), {"color": color}) for xyxy, caption in boxes]


def sample_panels(store: ArtifactStore, dataset: str, key: str) -> tuple[list[tuple[str, np.ndarray, dict]], list[str]]:
    """The panels (title, array, imshow kwargs + optional "overlays") and text lines of one sample."""
    img_row = _row(store, dataset, "images", key)
    if img_row is None:
        raise KeyError(f"sample {key!r} not found in {dataset}/images")
    rgb = decode_image(img_row["image"])
    panels: list[tuple[str, np.ndarray, dict]] = [("image", rgb, {})]
    texts: list[str] = [f"sample {key}", f"caption: {img_row.get('caption')}"]

    if (r := _row(store, dataset, "labels/depth", key)) is not None:
        panels.append(("depth", codecs.depth_map(r), {"cmap": "turbo"}))
    if (r := _row(store, dataset, "labels/normal", key)) is not None:
        panels.append(("normals", (codecs.normal_map(r) + 1) / 2, {}))
    if (r := _row(store, dataset, "labels/semseg", key)) is not None:
        sem = codecs.semseg_map(r)
        panels.append(("semseg (COCO panoptic)", semseg_palette()[sem], {}))
        ids, counts = np.unique(sem, return_counts=True)
        top = sorted(zip(counts, ids), reverse=True)[:5]
        texts.append("semseg: " + ", ".join(f"{'none' if i == 0 else COCO_PANOPTIC_CLASSES[i - 1]} {c / sem.size:.0%}"
                                            for c, i in top))
    if (r := _row(store, dataset, "labels/canny_edge", key)) is not None:
        panels.append(("canny edges", codecs.png_decode(r["edges"]), {"cmap": "gray"}))
    if (r := _row(store, dataset, "labels/sam_instance", key)) is not None:
        panels.append((f"SAM instances ({r['n_instances']})", _instance_overlay(rgb, r), {}))
    if (r := _row(store, dataset, "labels/sam_edge", key)) is not None:
        panels.append(("SAM edges", codecs.png_decode(r["edges"]), {"cmap": "gray"}))
    if (r := _row(store, dataset, "labels/det", key)) is not None:
        import json

        boxes = [(b["xyxy"], f"{b['class_name']} {b['score']:.2f}" if b.get("score") is not None else b["class_name"])
                 for b in json.loads(r["det"])["boxes"]]
        panels.append((f"boxes COCO-80 ({len(boxes)})", rgb, {"overlays": _boxes(boxes, "yellow")}))
    if (r := _row(store, dataset, "labels/human_poses", key)) is not None:
        people = [(xyxy, f"person {i}") for i, xyxy in enumerate(r["bbox"] or [])]
        panels.append((f"human poses ({r['n_humans'] or 'none'})", rgb, {"overlays": _boxes(people, "cyan")}))
    for art, col, title in (("labels/clip_features", "features", "CLIP patches (PCA)"),
                            ("labels/dinov2_features", "features", "DINOv2 patches (PCA)"),
                            ("labels/imagebind_features", "features", "ImageBind patches (PCA)")):
        if (r := _row(store, dataset, art, key)) is not None:
            f = np.frombuffer(r[col], "<f2").astype(np.float32)
            g = 14 if "clip" in art else 16
            panels.append((title, _pca_rgb(f.reshape(g, g, -1)), {"interpolation": "nearest"}))
    palette_img = None
    if (r := _row(store, dataset, "labels/color_palette", key)) is not None:
        from .labelers.palette import unpack

        rows = []
        for p in unpack(r["palettes"]):  # each palette as one 70-px-wide row of equal swatches
            rows.append(np.repeat(np.repeat(p[None], 10, 0), 70 // len(p) + 1, 1)[:, :70])
        palette_img = np.concatenate([np.pad(x, ((1, 1), (0, 0), (0, 0)), constant_values=255) for x in rows])
        panels.append(("colour palettes k=1..7", palette_img, {"interpolation": "nearest", "aspect": "auto"}))
    if (r := _row(store, dataset, "labels/metadata", key)) is not None:
        vals = [f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()
                if k not in ("sample_key", "providers") and v is not None]
        texts.append("metadata: " + ", ".join(vals))
    if (r := _row(store, dataset, "labels/t5_caption", key)) is not None:
        texts.append(f"t5_caption: {r['n_tokens']} tokens x {r['dim']}")
    for art in ("labels/dinov2_global", "labels/imagebind_global"):
        if (r := _row(store, dataset, art, key)) is not None:
            e = np.frombuffer(r["embedding"], "<f2").astype(np.float32)
            texts.append(f"{art.split('/')[1]}: dim {e.size}, |e|={np.linalg.norm(e):.3f}")
    return panels, texts


def render_sample(store: ArtifactStore, dataset: str, key: str, out: str) -> str:
    """Write the sample's panels as one PNG to ``out`` (a path or an fsspec URI); returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    panels, texts = sample_panels(store, dataset, key)

    cols = 4
    nrows = (len(panels) + cols - 1) // cols
    text_h = 0.16 * (wrapped := "\n".join(textwrap.fill(t, 150) for t in texts)).count("\n") + 0.4
    height = 3.4 * nrows + text_h
    fig = plt.figure(figsize=(4 * cols, height), dpi=90)
    for i, (title, arr, kw) in enumerate(panels):
        ax = fig.add_subplot(nrows, cols, i + 1)
        kw = dict(kw)
        overlays = kw.pop("overlays", [])
        im = ax.imshow(arr, **kw)
        h, w = arr.shape[:2]
        for _, (x0, y0, x1, y1, caption), style in overlays:
            ax.add_patch(Rectangle((x0 * w, y0 * h), (x1 - x0) * w, (y1 - y0) * h, fill=False, lw=1.5, **style))
            ax.text(x0 * w, y0 * h, caption, fontsize=7, va="bottom", backgroundcolor=(0, 0, 0, 0.5), **style)
        if title == "depth":
            fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.text(0.01, 0.01, wrapped, fontsize=8, family="monospace", va="bottom")
    fig.tight_layout(rect=(0, text_h / height, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    if "://" in out:
        import fsspec

        with fsspec.open(out, "wb") as f:
            f.write(buf.getvalue())
    else:
        with open(out, "wb") as f:
            f.write(buf.getvalue())
    return out
