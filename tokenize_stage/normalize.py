"""Raw pseudo-label arrays -> the normalised tensors tokenizers consume (4M-FACTS §1), and back.

Raw layouts (one sample, as labelers store them as .npy):
    rgb      uint8 (H, W, 3)               -> (3, H, W) float in [-1, 1] (mean = std = 0.5)
    depth    float (H, W)                  -> (1, H, W) robust-standardised
    normal   float (H, W, 3) unit vectors  -> (3, H, W) in [-1, 1]
    edge     bool/uint8 (H, W) in {0, 1}   -> (1, H, W) in {-1, 1}
    semseg   uint8 (H, W) class ids (+1 shifted, 0 = none) -> (H, W) int64
    features float (h, w, C) or (C, h, w)  -> (C, h, w) float
    mask     bool/uint8 (64, 64)           -> (1, 64, 64) float in {0, 1}
    pose / global  float (D,)              -> (D,) float
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def robust_standardize(depth: torch.Tensor, trim: float = 0.1) -> torch.Tensor:
    """Drop the lowest and highest ``trim`` fraction, then (d - mean) / sqrt(var + 1e-6) with their stats."""
    flat = depth.flatten().float()
    lo, hi = torch.quantile(flat, trim), torch.quantile(flat, 1 - trim)
    kept = flat[(flat >= lo) & (flat <= hi)]
    if kept.numel() < 2:
        kept = flat
    return (depth - kept.mean()) / torch.sqrt(kept.var(unbiased=False) + 1e-6)


def _resize(x: torch.Tensor, size: int, nearest: bool) -> torch.Tensor:
    """(C, H, W) -> (C, size, size)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    mode = "nearest" if nearest else "bilinear"
    kwargs = {} if nearest else {"align_corners": False, "antialias": True}
    return F.interpolate(x[None].float(), size=(size, size), mode=mode, **kwargs)[0]


def normalize(target: str, raw: np.ndarray, size: int | None = None, channels: int | None = None) -> torch.Tensor:
    """One raw label array -> normalised tensor for a tokenizer with this ``target`` (see module doc).

    ``size`` resizes pixel-space inputs to the tokenizer's image size; ``channels`` tells feature maps'
    channel axis apart from their spatial axes.
    """
    a = np.asarray(raw)
    if target == "rgb":
        x = torch.from_numpy(a.astype(np.float32)).permute(2, 0, 1) / 127.5 - 1.0
        return _resize(x, size, False).clamp(-1, 1) if size else x
    if target == "depth":
        x = torch.from_numpy(a.astype(np.float32))[None]
        return robust_standardize(_resize(x, size, False) if size else x)
    if target == "normal":
        x = torch.from_numpy(a.astype(np.float32)).permute(2, 0, 1)
        return (_resize(x, size, False) if size else x).clamp(-1, 1)
    if target == "edge":
        x = torch.from_numpy((a > 0).astype(np.float32))[None]
        return (_resize(x, size, True) if size else x) * 2 - 1
    if target == "semseg":
        x = torch.from_numpy(a.astype(np.int64))[None]
        return (_resize(x, size, True) if size else x)[0].long()
    if target == "mask":
        x = torch.from_numpy((a > 0).astype(np.float32))[None]
        return _resize(x, size, True) if size else x
    if target == "features":
        x = torch.from_numpy(a.astype(np.float32))
        if channels is not None and x.shape[-1] == channels and x.shape[0] != channels:
            x = x.permute(2, 0, 1)  # (h, w, C) -> (C, h, w)
        return _resize(x, size, False) if size else x
    if target in ("pose", "global"):
        return torch.from_numpy(a.astype(np.float32).reshape(-1))
    raise ValueError(f"unknown target {target!r}")


def normalize_batch(config, arrays: list[np.ndarray]) -> torch.Tensor:
    """Stack normalised samples for a tokenizer ``config`` (uses its target, image size and channels)."""
    size = getattr(config, "image_size", None)
    channels = getattr(config, "in_channels", None)
    return torch.stack([normalize(config.target, a, size, channels) for a in arrays])


def to_display(target: str, x: torch.Tensor) -> np.ndarray:
    """A normalised sample (or reconstruction) -> an (H, W) or (H, W, 3) array for a PNG."""
    if target in ("rgb", "normal"):
        return ((x.permute(1, 2, 0).clamp(-1, 1) + 1) / 2).cpu().numpy()
    if target in ("depth", "edge", "mask"):
        return x[0].cpu().numpy()
    if target == "semseg":
        return x.cpu().numpy()
    if target == "features":  # first three channels of a fixed projection, rescaled
        y = x[:3].cpu().numpy().transpose(1, 2, 0)
        return (y - y.min()) / (np.ptp(y) + 1e-6)
    return x.reshape(1, -1).cpu().numpy()  # vectors as a 1-row strip
