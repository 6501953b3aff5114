"""RGB pixels as the 4M encoder takes them (the ``rgb@224`` modality): the sample's crop of the ingested
image, resized to 224x224, ImageNet mean/std (4M-FACTS §1: RGB into the 4M encoder with ImageNet
statistics; the tokenizers take [-1, 1] instead), cut into 16x16 patches.

The crop is the one recorded in ``tokens/_crops`` for the sample's crop index, so the pixels show exactly
what the sample's image tokens encode (same box, same flip).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fourm_core.crops import Crop, apply_crop

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def crop_rgb(image: np.ndarray, crop: Crop, size: int) -> torch.Tensor:
    """uint8 (H, W, 3) -> (3, size, size) float in [0, 1]: crop + flip, then an antialiased bilinear resize."""
    a = apply_crop(np.asarray(image), crop, "rgb", None)
    x = torch.from_numpy(a).permute(2, 0, 1)[None].float().div_(255.0)  # in place: no second float copy
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0].clamp_(0, 1)


def normalize_rgb(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) in [0, 1] -> ImageNet-normalised."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype)[:, None, None]
    return (x - mean) / std


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, (H/P)·(W/P), P·P·C), patches row-major, pixels (ph pw c) within a patch."""
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // patch, patch, W // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(B, (H // patch) * (W // patch), patch * patch * C)


def model_pixels_into(out: torch.Tensor, image: np.ndarray, crop: Crop, size: int, patch: int) -> None:
    """One ingested image -> its encoder patches, ImageNet-normalised, written into ``out``
    ((size/patch)², patch² · 3) float32, e.g. a row of the batch's pixel tensor.

    The same values as ``patchify(normalize_rgb(crop_rgb(...)))``, computed in place on one image (it stays in
    the CPU cache; normalising and patchifying a whole 64-image batch afterwards cost 3-4x as much)."""
    x = crop_rgb(image, crop, size)
    x.sub_(torch.tensor(IMAGENET_MEAN)[:, None, None]).div_(torch.tensor(IMAGENET_STD)[:, None, None])
    g = size // patch
    out.view(g, g, patch, patch, 3).copy_(x.view(3, g, patch, g, patch).permute(1, 3, 2, 4, 0))


def model_pixels(image: np.ndarray, crop: Crop, size: int, patch: int) -> torch.Tensor:
    """One ingested image -> its encoder patches (size/patch)² x (patch² · 3), ImageNet-normalised."""
    out = torch.empty((size // patch) ** 2, patch * patch * 3)
    model_pixels_into(out, image, crop, size, patch)
    return out
