"""Person crops as HMR2.0 feeds them: a square patch around the box, aspect-expanded to 3:4, anti-aliased,
resized to H x H, of which the middle W columns go to the ViT (HMR2.0: 256x256 patch, columns 32:-32)."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from pseudolabel.humans.config import HMR2Config

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def patch_size_px(box_px: np.ndarray, cfg: HMR2Config, rescale: float = 1.0) -> float:
    """Side in pixels of the square patch for an (x0, y0, x1, y1) pixel box: the box (times ``rescale``)
    grown to the crop's W:H aspect, then its longer side (4D-Humans ``expand_to_aspect_ratio(...).max()``)."""
    w, h = (box_px[2] - box_px[0]) * rescale, (box_px[3] - box_px[1]) * rescale
    wt, ht = cfg.image_width, cfg.image_height
    if h / max(w, 1e-6) < ht / wt:
        h = max(w * ht / wt, h)
    else:
        w = max(h * wt / ht, w)
    return float(max(w, h, 1.0))


def crop_person(image: np.ndarray, box_px: np.ndarray, cfg: HMR2Config, rescale: float = 1.0) -> np.ndarray:
    """HxWx3 uint8 RGB image, pixel box -> (image_height, image_width, 3) float32 crop, ImageNet-normalised.

    Outside the image is black (then normalised), as HMR2.0's BORDER_CONSTANT patch.
    """
    side = patch_size_px(box_px, cfg, rescale)
    cx, cy = (box_px[0] + box_px[2]) / 2, (box_px[1] + box_px[3]) / 2
    out_h = cfg.image_height
    # anti-aliasing blur before downsampling, with HMR2.0's sigma rule
    factor = side / out_h / 2.0
    src = image
    if factor > 1.1:
        src = cv2.GaussianBlur(image, (0, 0), sigmaX=(factor - 1) / 2)
    s = out_h / side
    off = (cfg.image_height - cfg.image_width) / 2  # columns dropped on each side of the square patch
    # dst = s * (src - c) + out_h / 2 - [off, 0]  (pixel centres: cv2's affine maps pixel indices)
    m = np.array([[s, 0, out_h / 2 - off - s * cx - 0.5 + 0.5 * s],
                  [0, s, out_h / 2 - s * cy - 0.5 + 0.5 * s]], dtype=np.float64)
    crop = cv2.warpAffine(src, m, (cfg.image_width, cfg.image_height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return (crop.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def crops_tensor(image: np.ndarray, boxes_px: np.ndarray, cfg: HMR2Config, rescale: float = 1.0) -> torch.Tensor:
    """(N, 4) pixel boxes of one image -> (N, 3, image_height, image_width) float32 network input."""
    if len(boxes_px) == 0:
        return torch.zeros(0, 3, cfg.image_height, cfg.image_width)
    return torch.from_numpy(np.stack([crop_person(image, b, cfg, rescale) for b in boxes_px])).permute(0, 3, 1, 2)
