"""SAM edges (4M-21 tok_sam_edge): Canny on the rendered SAM instance map."""

from __future__ import annotations

import cv2
import numpy as np

# The instance map holds small integer ids; any id change is a step of >= 1 grey level, so
# thresholds below 1 make every instance boundary an edge and nothing else.
CANNY_LOW = 0.5
CANNY_HIGH = 0.9


def render_instance_map(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool masks -> (H, W) uint8 instance map, 0 = background, ids 1..N.

    Larger instances are painted first so smaller ones stay visible on top. Ids are assigned in
    paint order (largest = 1) and wrap past 255 (adjacent instances still differ in practice).
    """
    n, h, w = masks.shape
    out = np.zeros((h, w), np.uint8)
    areas = masks.reshape(n, h * w).sum(1)
    for rank, idx in enumerate(np.argsort(-areas, kind="stable")):
        out[masks[idx]] = (rank % 255) + 1
    return out


def sam_edges(instance_map: np.ndarray) -> np.ndarray:
    """(H, W) uint8 instance map -> (H, W) uint8 edge map (255 on edges) via OpenCV Canny."""
    return cv2.Canny(instance_map, CANNY_LOW, CANNY_HIGH)
