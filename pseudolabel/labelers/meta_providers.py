"""Metadata providers: each computes some 4M-21 metadata fields (4M-FACTS §4) from what it needs.

The metadata labeler runs every provider whose needs are available in this run; fields of the others
stay null. The count-based fields come from the labels that already hold them: ``sam_instance`` (SAM clutter),
``det`` (COCO clutter and instance diversity) and ``human_poses`` (crowdedness). A new provider is added
here with its label in MetadataLabeler.optional_needs.
Values are raw (pixels, fractions, counts); binning into tokens is the tokenizer's job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np
import pyarrow as pa

from fourm_core.coco import NUM_PANOPTIC, PANOPTIC_LIST_A, WALKABLE_IDS

from ..codecs import depth_map, normal_map, semseg_map
from ..spec import CAPTION, RGB


@dataclass(frozen=True)
class Provider:
    name: str
    needs: tuple[str, ...]
    fields: dict[str, pa.DataType]
    compute: Callable[[dict[str, Any]], dict[str, Any]]  # sample inputs (need -> value) -> field -> value


# ---------------------------------------------------------------------------------------- image stats


def image_stats(rgb: np.ndarray) -> dict[str, float]:
    """Brightness = mean grey (0–255); contrast = RMS contrast = std of grey (0–127.5); saturation = mean
    HSV S (0–255); entropy = Shannon entropy in bits of the 256-bin grey histogram (0–8); colorfulness =
    Hasler & Süsstrunk (2003): σ_rgyb + 0.3·μ_rgyb with rg = R−G, yb = (R+G)/2 − B."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float64)
    hist = np.bincount(grey.astype(np.uint8).ravel(), minlength=256).astype(np.float64)
    p = hist[hist > 0] / hist.sum()
    sat = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1].astype(np.float64)
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    colorfulness = np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    return {"brightness": float(grey.mean()), "contrast": float(grey.std()), "saturation": float(sat.mean()),
            "entropy": float(-(p * np.log2(p)).sum()), "colorfulness": float(colorfulness)}


def _image(x: dict) -> dict:
    out = image_stats(x[RGB])
    out["original_width"] = x.get("orig_width")
    out["original_height"] = x.get("orig_height")
    return out


# -------------------------------------------------------------------------------------------- caption

_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")


def caption_stats(caption: str | None) -> dict[str, int | None]:
    """chars = len(caption); words = whitespace-separated tokens; sentences = runs of text ended by . ! ?
    (a trailing fragment without end mark counts as one sentence). None when there is no caption."""
    if caption is None:
        return {"caption_n_chars": None, "caption_n_words": None, "caption_n_sentences": None}
    text = caption.strip()
    parts = [p for p in _SENTENCE_END.split(text) if p.strip()]
    return {"caption_n_chars": len(caption), "caption_n_words": len(text.split()), "caption_n_sentences": len(parts)}


# ------------------------------------------------------------------------------------------- semantic

# Decision on the 4M-21 appendix D.1 list (coco.PANOPTIC_LIST_A): every index in it is an amorphous
# "stuff" class (floor, road, sky, wall, grass...), and the walkable list is a subset of it, so it is the
# list of *non-countable* background classes. Objectness ("share of pixels in countable object classes")
# is therefore the share of pixels whose class is labelled and NOT in that list: all 80 things plus
# object-like stuff (banner, pillow, shelf, ...). Unlabelled pixels (0) count as not-object.
_LIST_A = np.zeros(NUM_PANOPTIC + 1, bool)
_LIST_A[np.asarray(PANOPTIC_LIST_A) + 1] = True
_WALK = np.zeros(NUM_PANOPTIC + 1, bool)
_WALK[np.asarray(WALKABLE_IDS) + 1] = True


def semantic_stats(sem: np.ndarray) -> dict[str, float | int]:
    """sem: uint8 H×W panoptic id + 1 (0 = none). objectness, walkability in [0, 1]; diversity = #classes."""
    counts = np.bincount(sem.ravel(), minlength=NUM_PANOPTIC + 1)[: NUM_PANOPTIC + 1].astype(np.float64)
    total = counts.sum()
    labelled = counts.copy()
    labelled[0] = 0
    return {"objectness": float(labelled[~_LIST_A].sum() / total),
            "walkability": float(counts[_WALK].sum() / total),
            "semantic_diversity": int((labelled > 0).sum())}


# ------------------------------------------------------------------------------------------ geometric


def geometric_complexity(normals: np.ndarray) -> float:
    """Angular (circular) variance of unit normals on the sphere: 1 − |mean of the unit vectors|, in [0, 1]."""
    v = normals.reshape(-1, 3)
    return float(max(0.0, 1.0 - np.linalg.norm(v.mean(axis=0))))  # quantised normals can give |mean| > 1 by ~1e-3


def occlusion_score(depth: np.ndarray, threshold: float = 0.3) -> float:
    """Share of pixels whose Sobel gradient magnitude of the min–max normalised depth exceeds ``threshold``.

    Sobel 3×3 kernels are divided by 8 so the magnitude is a per-pixel depth step in [0, ~1.4]."""
    d = depth.astype(np.float32)
    rng = float(d.max() - d.min())
    if rng <= 0:
        return 0.0
    d = (d - d.min()) / rng
    gx = cv2.Sobel(d, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(d, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    return float((np.sqrt(gx * gx + gy * gy) > threshold).mean())


def _geometric_n(x: dict) -> dict:
    return {"geometric_complexity": geometric_complexity(normal_map(x["normal"]))}


def _geometric_d(x: dict) -> dict:
    return {"occlusion_score": occlusion_score(depth_map(x["depth"]))}


_F, _I = pa.float32(), pa.int32()

PROVIDERS: tuple[Provider, ...] = (
    Provider("image", (RGB,), {"original_width": _I, "original_height": _I, "brightness": _F, "contrast": _F,
                               "saturation": _F, "entropy": _F, "colorfulness": _F}, _image),
    Provider("caption", (CAPTION,), {"caption_n_chars": _I, "caption_n_words": _I, "caption_n_sentences": _I},
             lambda x: caption_stats(x.get(CAPTION))),
    Provider("semantic", ("semseg",), {"objectness": _F, "walkability": _F, "semantic_diversity": _I},
             lambda x: semantic_stats(semseg_map(x["semseg"]))),
    Provider("geometric_normals", ("normal",), {"geometric_complexity": _F}, _geometric_n),
    Provider("geometric_depth", ("depth",), {"occlusion_score": _F}, _geometric_d),
    Provider("sam_clutter", ("sam_instance",), {"n_sam_instances": _I},
             lambda x: {"n_sam_instances": x["sam_instance"]["n_instances"]}),
    Provider("coco_clutter", ("det",), {"n_coco_instances": _I, "coco_instance_diversity": _I},
             lambda x: {k: x["det"][k] for k in ("n_coco_instances", "coco_instance_diversity")}),
    Provider("crowdedness", ("human_poses",), {"n_humans": _I}, lambda x: {"n_humans": x["human_poses"]["n_humans"]}),
)

# Fields of 4M-FACTS §4 that no provider fills yet (watermark and aesthetic scorers: their models are
# not part of this release). They are columns now so the schema is stable when providers arrive.
PENDING_FIELDS: dict[str, pa.DataType] = {"watermark_score": _F, "aesthetic_score": _F}
