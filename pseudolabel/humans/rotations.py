"""Rotation representations used by the HMR2-style head (torch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rot6d_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """(..., 6) continuous 6D rotations (Zhou et al. 2019) -> (..., 3, 3) rotation matrices.

    Same convention as HMR2.0: the 6 numbers are two 3-vectors a1 = x[..., :3], a2 = x[..., 3:]; Gram-Schmidt
    gives columns b1, b2 and b3 = b1 x b2, so the result is orthonormal with determinant +1.
    """
    a1, a2 = x[..., :3], x[..., 3:6]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-1)


def rotmat_to_rot6d(r: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): the first two columns, the inverse of :func:`rot6d_to_rotmat` on rotations."""
    return torch.cat((r[..., :, 0], r[..., :, 1]), dim=-1)


def rotation_error(r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., 3, 3) -> (max |R^T R - I| per matrix, det R per matrix): how far from a proper rotation."""
    eye = torch.eye(3, dtype=r.dtype, device=r.device)
    ortho = (r.transpose(-1, -2) @ r - eye).abs().amax(dim=(-1, -2))
    return ortho, torch.linalg.det(r)
