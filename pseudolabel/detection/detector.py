"""The detector labeler core: build / load / save a transformers detection model and run ``detect``.

``Detector`` bundles the model with its family (how to feed and read it), the COCO-80 index map derived
from the model's own ``id2label`` by name, and the score threshold. ``detect(detector, images)`` is the
plain function the labeler framework wraps.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch

from fourm_core.seeding import seeded
from fourm_core.structured import Detections
from pseudolabel.detection.families import DEFAULT_FAMILY, Family, build_config, get_family, resolve_class
from pseudolabel.detection.labels import coco_index_map
from pseudolabel.detection.postprocess import SCORE_THRESHOLD, from_scored_boxes, to_detections

FAMILY_FILE = "fourm_detector.json"  # records the family next to the transformers config


@dataclass
class Detector:
    """A loaded detector. ``model`` is a transformers ``*ForObjectDetection`` in eval mode."""

    model: torch.nn.Module
    family: Family
    threshold: float = SCORE_THRESHOLD
    max_detections: int = 100
    batch_size: int = 8
    index_map: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.index_map:
            self.index_map = coco_index_map(self.model.config.id2label)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def with_input_size(detector: Detector, size: int, max_size: int | None = None) -> Detector:
    """Feed ``detector`` at another input size (square side, or short edge with long edge <= ``max_size``),
    e.g. a config override or small inputs in tests. Returns the same object."""
    detector.family = replace(detector.family, size=size, max_size=max_size if max_size is not None else size)
    return detector


def _model_class(family: Family):
    return resolve_class(family.model_class)


def build_detector(family: str = DEFAULT_FAMILY, profile: Literal["tiny", "full"] = "tiny", seed: int = 0,
                   **kwargs) -> Detector:
    """Random-weight detector of ``family`` ("tiny" for tests, "full" = production architecture for benches).
    Seeded without touching the global RNG, so the tiny weights are the same everywhere."""
    fam = get_family(family)
    with seeded(seed):
        model = _model_class(fam)(build_config(family, profile)).eval()
    return Detector(model=model, family=fam, **kwargs)


def save_detector(detector: Detector, path: str | Path) -> None:
    """Write safetensors weights + transformers config + our family record to directory ``path``."""
    path = Path(path)
    detector.model.save_pretrained(path, safe_serialization=True)
    (path / FAMILY_FILE).write_text(f'{{"family": "{detector.family.name}"}}\n')


def load_detector(source: str | Path, family: str | None = None, **kwargs) -> Detector:
    """Load from a local directory (safetensors + config.json) or a hub id (needs network or the HF cache).

    ``family`` defaults to the one recorded by :func:`save_detector`, else the config's ``model_type``.
    s3:// sources are fetched to a local directory by the labeler framework (pseudolabel.models.resolve)
    before this is called.
    """
    import json

    from transformers import AutoConfig

    local = Path(source)
    if family is None and (local / FAMILY_FILE).exists():
        family = json.loads((local / FAMILY_FILE).read_text())["family"]
    if family is None:
        family = AutoConfig.from_pretrained(str(source)).model_type  # "detr", "deformable_detr", "rt_detr"
    fam = get_family(family)
    model = _model_class(fam).from_pretrained(str(source), use_safetensors=True).eval()
    return Detector(model=model, family=fam, **kwargs)


def preprocess(image: np.ndarray, family: Family) -> torch.Tensor:
    """HxWx3 uint8 RGB -> (3, H', W') float32 network input (resized whole, no padding, so normalised boxes
    are relative to the original image)."""
    h, w = image.shape[:2]
    if family.resize == "square":
        nh = nw = family.size
    else:
        scale = min(family.size / min(h, w), family.max_size / max(h, w))
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_AREA if nh * nw < h * w else cv2.INTER_LINEAR
    x = cv2.resize(image, (nw, nh), interpolation=interp).astype(np.float32) / 255.0
    if family.mean is not None:
        x = (x - np.asarray(family.mean, np.float32)) / np.asarray(family.std, np.float32)
    return torch.from_numpy(x).permute(2, 0, 1).contiguous()


def _check_image(i: int, im: np.ndarray) -> None:
    if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
        raise ValueError(f"image {i}: expected HxWx3 uint8 RGB, got {im.dtype} {im.shape}")


@torch.inference_mode()
def detect(detector: Detector, images: list[np.ndarray]) -> list[Detections]:
    """Detect COCO-80 objects. images: HxWx3 uint8 RGB of any sizes. Returns one Detections per image,
    boxes normalised xyxy, ordered by score (descending), all with score >= ``detector.threshold``.

    Images whose network input has the same shape are batched (up to ``batch_size``): no padding is ever
    added, so there is no pixel mask to get wrong and the boxes need no un-padding.
    """
    for i, im in enumerate(images):
        _check_image(i, im)
    inputs = [preprocess(im, detector.family) for im in images]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, x in enumerate(inputs):
        groups.setdefault(tuple(x.shape), []).append(i)
    results: list[Detections | None] = [None] * len(images)
    dev = detector.device
    for idx in groups.values():
        for s in range(0, len(idx), detector.batch_size):
            chunk = idx[s: s + detector.batch_size]
            x = torch.stack([inputs[i] for i in chunk]).to(dev)
            if detector.family.output == "instances":
                # candidates down to the labeler's threshold when it is below the model's own (e.g. 0 in the demo)
                thresh = min(detector.model.config.score_thresh, detector.threshold)
                for j, inst in zip(chunk, detector.model(pixel_values=x, score_thresh=thresh).instances):
                    dets = from_scored_boxes(inst.boxes.cpu().numpy(), inst.scores.cpu().numpy(),
                                             inst.labels.cpu().numpy(), x.shape[-1], x.shape[-2],
                                             detector.index_map, detector.threshold)
                    results[j] = Detections(boxes=dets.boxes[: detector.max_detections])
                continue
            out = detector.model(pixel_values=x)
            logits = out.logits.float().cpu().numpy()  # (B, Q, C')
            boxes = out.pred_boxes.float().cpu().numpy()  # (B, Q, 4) normalised cxcywh
            for j, i in enumerate(chunk):
                results[i] = to_detections(logits[j], boxes[j], detector.index_map,
                                           activation=detector.family.activation, threshold=detector.threshold,
                                           max_detections=detector.max_detections)
    return results  # type: ignore[return-value]
