"""Geometry of the sequence modalities under a sample's shared crop (``crops.crop_for``), and the stored-label
readers that the mask / pose VQ tokenizers train on.

Everything here works on the labelers' stored rows (docs/labelers.md) with no import of the pseudolabel
stage (stages do not import each other): SAM instances are COCO compressed RLE in the mask frame (decoded
with pycocotools), persons are the pose labeler's float list columns, boxes are normalised xyxy.

Conventions, shared with the image modalities:

* a crop is ``Crop(box=(x0, y0, x1, y1) normalised, flip)``; boxes are re-normalised to the crop, clipped,
  dropped when nothing of them is left, then mirrored (``x -> 1 - x``) when ``flip``;
* masks go through :func:`crops.apply_crop` (the same integer pixel rounding as every image label), then a
  nearest resize to the 224x224 crop (``SAM_CROP``); the in-box mask is the tight box's pixels (xmax / ymax
  inclusive) resized nearest to 64x64 (``MASK_SIZE``), the mask VQ's input;
* a flipped person mirrors its body: joint rotations R -> M R M (M = diag(1, -1, -1)) with left/right
  joints swapped (SMPL order), the root orientation likewise, the weak-perspective camera's tx negated
  (the rule of pseudolabel/humans/flip.py, restated here). The camera belongs to the person crop, so an
  image crop leaves it unchanged.
"""

from __future__ import annotations

import numpy as np

from .crops import Crop, apply_crop
from .registry import MASK_SIZE, POSE_DIM

SAM_CROP = 224  # sam_instance coordinates are integer pixels of the 224x224 crop (4M-FACTS §3)
SMPL_FLIP_PERM = (0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 23, 22)
_M = np.diag([1.0, -1.0, -1.0])


# ------------------------------------------------------------------------------------------------ boxes


def crop_boxes(xyxy: np.ndarray, crop: Crop) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) normalised boxes of the image -> ((K, 4) boxes normalised to the crop, flipped if the crop is,
    clipped to [0, 1]; (N,) bool of the boxes kept: those with a positive visible area)."""
    b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    cx0, cy0, cx1, cy1 = crop.box
    cw, ch = cx1 - cx0, cy1 - cy0
    moved = np.clip((b - np.array([cx0, cy0, cx0, cy0])) / np.array([cw, ch, cw, ch]), 0.0, 1.0)
    keep = (moved[:, 2] > moved[:, 0]) & (moved[:, 3] > moved[:, 1])
    out = moved[keep]
    if crop.flip:
        out = np.stack([1.0 - out[:, 2], out[:, 1], 1.0 - out[:, 0], out[:, 3]], axis=1)
    return out, keep


# ------------------------------------------------------------------------------------------------ masks


def decode_rle(counts: str | bytes, height: int, width: int) -> np.ndarray:
    """COCO compressed RLE -> (height, width) bool."""
    from pycocotools import mask as mask_utils

    c = counts.encode("ascii") if isinstance(counts, str) else counts
    return mask_utils.decode({"size": [int(height), int(width)], "counts": c}).astype(bool)


def sam_row_masks(row: dict) -> list[np.ndarray]:
    """A stored ``labels/sam_instance`` row -> its instance masks (mask frame, bool)."""
    return [decode_rle(i["counts"], row["mask_height"], row["mask_width"]) for i in row.get("instances") or []]


def _resize_nearest(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    import cv2

    return cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)


def crop_mask(mask: np.ndarray, crop: Crop, size: int = SAM_CROP) -> np.ndarray:
    """A full-frame bool mask -> the crop's (size, size) bool mask (crop, flip, nearest resize)."""
    return _resize_nearest(apply_crop(mask, crop, "mask"), size, size)


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(xmin, ymin, xmax, ymax) inclusive pixel extents of a bool mask; None when it is empty."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def in_box_mask(mask: np.ndarray, box: tuple[int, int, int, int], size: int = MASK_SIZE) -> np.ndarray:
    """The mask's pixels inside ``box`` (inclusive xyxy) resized nearest to (size, size): the mask VQ input."""
    x0, y0, x1, y1 = box
    return _resize_nearest(mask[y0:y1 + 1, x0:x1 + 1], size, size)


def sam_training_masks(row: dict) -> list[np.ndarray]:
    """The mask VQ's training samples from one stored SAM row: each non-empty instance's in-box 64x64 mask."""
    out = []
    for m in sam_row_masks(row):
        box = tight_box(m)
        if box is not None:
            out.append(in_box_mask(m, box))
    return out


# ---------------------------------------------------------------------------------------------- persons


def flip_rotations(rots: np.ndarray) -> np.ndarray:
    """(24, 3, 3) SMPL rotations (root first) of a person -> those of the mirrored person."""
    return (_M @ rots @ _M)[list(SMPL_FLIP_PERM)]


def transform_person(person: dict, crop: Crop) -> dict | None:
    """One stored person (``bbox, global_orient, body_pose, betas, camera`` lists, ``score``) under ``crop``;
    None when its box leaves the crop."""
    box, keep = crop_boxes(np.array([person["bbox"]]), crop)
    if not keep[0]:
        return None
    go = np.asarray(person["global_orient"], np.float64).reshape(1, 3, 3)
    body = np.asarray(person["body_pose"], np.float64).reshape(23, 3, 3)
    camera = list(person["camera"])
    if crop.flip:
        rots = flip_rotations(np.concatenate([go, body]))
        go, body = rots[:1], rots[1:]
        camera[1] = -camera[1]
    return {"bbox": box[0].tolist(), "score": person.get("score"), "global_orient": go.reshape(-1).tolist(),
            "body_pose": body.reshape(-1).astype(np.float32), "betas": list(person["betas"]), "camera": camera}


def persons_of_row(row: dict) -> list[dict]:
    """A stored ``labels/human_poses`` row (list columns) -> one dict per person."""
    n = len(row.get("bbox") or [])
    keys = ("bbox", "global_orient", "body_pose", "betas", "camera")
    scores = row.get("score") or [None] * n
    return [{**{k: row[k][i] for k in keys}, "score": scores[i]} for i in range(n)]


def pose_training_vectors(row: dict) -> list[np.ndarray]:
    """The pose VQ's training samples from one stored human_poses row: each person's 207-d body pose."""
    return [np.asarray(p["body_pose"], np.float32).reshape(POSE_DIM) for p in persons_of_row(row)]
