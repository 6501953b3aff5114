"""Fixed sin-cos position embeddings (4M-FACTS §9), stored as buffers in checkpoints."""

from __future__ import annotations

import torch


def sincos_1d(n: int, dim: int, temperature: float = 1e4) -> torch.Tensor:
    """(1, n, dim): D/2 sines then D/2 cosines of position * temperature^(-k/(D/2))."""
    omega = 1.0 / temperature ** (torch.arange(dim // 2, dtype=torch.float32) / (dim // 2))
    angles = torch.arange(n, dtype=torch.float32)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)[None]


def sincos_2d(h: int, w: int, dim: int, temperature: float = 1e4) -> torch.Tensor:
    """(1, h*w, dim): per axis D/4 sines + D/4 cosines, first axis then second.

    The released checkpoints enumerate the grid with the column index outermost (a meshgrid in 'ij'
    order over (w, h)); we build the same table so fresh models match released buffers exactly.
    """
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    gw, gh = torch.meshgrid(torch.arange(w, dtype=torch.float32), torch.arange(h, dtype=torch.float32), indexing="ij")
    aw = gw.reshape(-1, 1) * omega[None]
    ah = gh.reshape(-1, 1) * omega[None]
    return torch.cat([aw.sin(), aw.cos(), ah.sin(), ah.cos()], dim=1)[None]
