"""Synthetic pseudo labels with the raw layouts of ``normalize`` — to develop and test tokenizers before
(and without) the real labelers. Every generator is deterministic in ``seed``.

Each sample has structure a tokenizer can learn (smooth fields, piecewise-constant regions, low-rank
features, blobs, low-dimensional poses, clustered embeddings) so trained tiny tokenizers can beat
trivial baselines on held-out samples.
"""

from __future__ import annotations

import numpy as np
import torch

N_CLASSES = 134
FEATURE_RANK = 6


def _smooth_field(rng: np.random.Generator, size: int, n_waves: int = 4) -> np.ndarray:
    """Sum of random low-frequency sinusoids, (size, size) float32 roughly in [-1, 1]."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    f = np.zeros((size, size))
    for _ in range(n_waves):
        fx, fy = rng.uniform(0.3, 2.0, 2)
        phase = rng.uniform(0, 2 * np.pi)
        f += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * (fx * xx + fy * yy) + phase)
    return (f / n_waves).astype(np.float32)


def _regions(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    """Voronoi partition into ``n`` regions: (size, size) int region ids."""
    pts = rng.uniform(0, size, (n, 2))
    yy, xx = np.mgrid[0:size, 0:size]
    d = (yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2
    return d.argmin(-1)


def semseg(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size) uint8 ids in 0..133; a few big regions, classes Zipf-distributed (so a majority exists)."""
    regions = _regions(rng, size, int(rng.integers(2, 6)))
    classes = np.minimum(rng.zipf(1.6, regions.max() + 1), N_CLASSES) - 1
    return classes[regions].astype(np.uint8)


def depth(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size) float32 metres: a tilted plane plus smooth bumps."""
    yy = np.mgrid[0:size, 0:size][0] / size
    return (3.0 + 2.0 * yy * rng.uniform(0.5, 1.5) + _smooth_field(rng, size)).astype(np.float32)


def normal(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32 unit normals of a smooth synthetic depth map."""
    d = depth(rng, size) * size / 4
    gy, gx = np.gradient(d)
    n = np.stack([-gx, -gy, np.ones_like(d)], -1)
    return (n / np.linalg.norm(n, axis=-1, keepdims=True)).astype(np.float32)


def rgb(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) uint8: a colour gradient with a few flat-coloured discs and boxes."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    img = c0 * (1 - yy[..., None]) + c1 * yy[..., None]
    for _ in range(int(rng.integers(1, 4))):
        colour = rng.uniform(0, 255, 3)
        cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.3)
        if rng.random() < 0.5:
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
        else:
            inside = (abs(yy - cy) < r) & (abs(xx - cx) < r * 0.7)
        img[inside] = colour
    return img.clip(0, 255).astype(np.uint8)


def edge(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size) uint8 {0, 1}: boundaries of a piecewise-constant region map (Canny-like)."""
    r = _regions(rng, size, int(rng.integers(3, 7)))
    e = np.zeros_like(r, dtype=bool)
    e[:, 1:] |= r[:, 1:] != r[:, :-1]
    e[1:, :] |= r[1:, :] != r[:-1, :]
    return e.astype(np.uint8)


def mask(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """(size, size) uint8 binary blob: one or two random ellipses."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    m = np.zeros((size, size), dtype=bool)
    for _ in range(int(rng.integers(1, 3))):
        cy, cx = rng.uniform(0.25, 0.75, 2)
        ry, rx = rng.uniform(0.1, 0.3, 2)
        m |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    return m.astype(np.uint8)


def features(rng: np.random.Generator, grid: int, channels: int) -> np.ndarray:
    """(grid, grid, channels) float32: smooth rank-6 coefficient maps times a fixed (dataset-wide) basis."""
    basis = np.random.default_rng(12345 + channels).normal(size=(FEATURE_RANK, channels)) / np.sqrt(FEATURE_RANK)
    coeff = np.stack([_smooth_field(rng, grid, 2) for _ in range(FEATURE_RANK)], -1) * 2
    return (coeff @ basis + 0.02 * rng.normal(size=(grid, grid, channels))).astype(np.float32)


def pose(rng: np.random.Generator) -> np.ndarray:
    """(207,) float32: 23 SMPL joint rotations as flattened 3x3 matrices, from small random axis-angles
    driven by a 4-d latent "action" (poses are low-dimensional, like real ones)."""
    mix = np.random.default_rng(777).normal(size=(4, 23 * 3)) * 0.4
    aa = (rng.normal(size=4) @ mix + 0.05 * rng.normal(size=23 * 3)).reshape(23, 3)
    theta = np.linalg.norm(aa, axis=1, keepdims=True) + 1e-8
    k = aa / theta
    kx = np.zeros((23, 3, 3))
    kx[:, 0, 1], kx[:, 0, 2], kx[:, 1, 0] = -k[:, 2], k[:, 1], k[:, 2]
    kx[:, 1, 2], kx[:, 2, 0], kx[:, 2, 1] = -k[:, 0], -k[:, 1], k[:, 0]
    t = theta[:, :, None]
    rot = np.eye(3) + np.sin(t) * kx + (1 - np.cos(t)) * kx @ kx  # Rodrigues
    return rot.reshape(-1).astype(np.float32)


def global_embedding(rng: np.random.Generator, dim: int) -> np.ndarray:
    """(dim,) unit-norm float32: one of 32 fixed cluster centres plus in-cluster noise."""
    centres = np.random.default_rng(999 + dim).normal(size=(32, dim))
    v = centres[rng.integers(0, 32)] + 0.6 * rng.normal(size=dim)
    return (v / np.linalg.norm(v)).astype(np.float32)


def synthetic_arrays(config, n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` raw label arrays suited to tokenizer ``config`` (its target, size and channels)."""
    rng = np.random.default_rng(seed)
    t = config.target
    if t == "pose":
        return [pose(rng) for _ in range(n)]
    if t == "global":
        return [global_embedding(rng, config.in_dim) for _ in range(n)]
    if t == "features":
        return [features(rng, config.image_size, config.in_channels) for _ in range(n)]
    gen = {"semseg": semseg, "depth": depth, "normal": normal, "rgb": rgb, "edge": edge, "mask": mask}[t]
    return [gen(rng, config.image_size) for _ in range(n)]


def synthetic_batch(config, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` normalised samples for ``config`` (what ``encode`` takes)."""
    from .normalize import normalize_batch

    return normalize_batch(config, synthetic_arrays(config, n, seed))
