"""Synthetic test images: flat-coloured shapes on a flat background, with their instance maps.

Test and benchmark images with known instances (no downloads needed).
"""

from __future__ import annotations

import cv2
import numpy as np


def shapes_image(seed: int, size: tuple[int, int] = (192, 256), n_shapes: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """An RGB uint8 image (H, W, 3) of random rectangles/ellipses and its instance map (H, W) int32.

    Instance 0 is the background; later shapes are drawn over earlier ones.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    img = np.empty((h, w, 3), np.uint8)
    img[:] = rng.integers(0, 256, 3, dtype=np.uint8)
    inst = np.zeros((h, w), np.int32)
    for k in range(1, n_shapes + 1):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        ax, ay = int(rng.integers(w // 12, w // 4)), int(rng.integers(h // 12, h // 4))
        shape = np.zeros((h, w), np.uint8)
        if rng.random() < 0.5:
            cv2.rectangle(shape, (cx - ax, cy - ay), (cx + ax, cy + ay), 1, -1)
        else:
            cv2.ellipse(shape, (cx, cy), (ax, ay), float(rng.integers(0, 180)), 0, 360, 1, -1)
        img[shape > 0] = colour
        inst[shape > 0] = k
    return img, inst
