"""The SAM labeler core: per image, instances (compact mask, box, scores), SAM edges, SAM clutter.

``label_image(model, rgb, settings) -> SamResult`` is a plain function so the labeler framework
can wrap it (one model per Ray actor). Masks are stored as COCO compressed RLE (pycocotools),
only for the final kept masks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils
from segment_anything.modeling import Sam

from .edges import render_instance_map, sam_edges
from .fast_amg import AmgSettings, FastMaskGenerator

# 4M-21 labels instances with ViT-H on a 32x32 grid at SAM's default thresholds.
PAPER_SETTINGS = AmgSettings(points_per_side=32)


@dataclass
class SamInstance:
    """One instance. ``rle``: COCO compressed RLE {"size": [h, w], "counts": str} in the mask frame;
    ``bbox``: xyxy inclusive pixel extents in original image pixels; scores from SAM."""

    rle: dict
    bbox: tuple[float, float, float, float]
    area: int
    predicted_iou: float
    stability_score: float
    point: tuple[float, float]


@dataclass
class SamResult:
    """Everything the SAM labeler produces for one image.

    ``mask_size``: (h, w) of the frame masks and edges are stored in (the image size, or smaller in
    low-resolution mode); ``edges``: (h, w) uint8 Canny edges of the instance map;
    ``n_instances``: the SAM-clutter count (4M-21 metadata n_sam_instances).
    """

    image_size: tuple[int, int]
    mask_size: tuple[int, int]
    instances: list[SamInstance] = field(default_factory=list)
    edges: np.ndarray | None = None

    @property
    def n_instances(self) -> int:
        return len(self.instances)


def encode_mask(mask: np.ndarray) -> dict:
    """(H, W) bool -> COCO compressed RLE with a str ``counts`` (JSON/Parquet friendly)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def decode_mask(rle: dict) -> np.ndarray:
    """COCO compressed RLE (str or bytes counts) -> (H, W) bool."""
    counts = rle["counts"]
    return mask_utils.decode({"size": list(rle["size"]),
                              "counts": counts.encode("ascii") if isinstance(counts, str) else counts}).astype(bool)


def label_image(model: Sam, rgb: np.ndarray, settings: AmgSettings = PAPER_SETTINGS,
                generator: FastMaskGenerator | None = None) -> SamResult:
    """SAM instances + edges for one RGB uint8 image (H, W, 3) with the fast generator.

    Pass ``generator`` to reuse one across images (it holds nothing image-specific).
    """
    gen = generator or FastMaskGenerator(model, settings)
    found = gen.generate(rgb)
    masks = found.masks.cpu().numpy()
    h, w = rgb.shape[:2]
    inv = 1.0 / found.scale
    instances = [
        SamInstance(rle=encode_mask(masks[i]),
                    bbox=tuple(float(v) * inv for v in found.boxes[i].tolist()),
                    area=int(masks[i].sum()), predicted_iou=float(found.iou_preds[i]),
                    stability_score=float(found.stability[i]), point=tuple(found.points[i].tolist()))
        for i in range(len(found))
    ]
    edges = sam_edges(render_instance_map(masks))
    return SamResult(image_size=(h, w), mask_size=(masks.shape[1], masks.shape[2]), instances=instances,
                     edges=edges)
