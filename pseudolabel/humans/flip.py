"""Horizontal flip of a stored person, for pre-tokenization's random flips.

Mirroring the image mirrors the body: left and right joints swap, and every joint rotation R (and the root
orientation) becomes M R M with M = diag(1, -1, -1) (the axis-angle rule (x, y, z) -> (x, -y, -z) of SPIN /
4D-Humans' ``flip_pose``, written on matrices). The weak-perspective camera's tx changes sign, the box flips.
Pose tokens must be recomputed from the flipped body pose (the VQ is not flip-equivariant).
"""

from __future__ import annotations

import numpy as np

from pseudolabel.detection.boxes import hflip_boxes
from pseudolabel.humans.types import PersonRaw

# SMPL's 24 joints (0 = pelvis) -> their mirror joint (left/right hips, knees, ankles, feet, collars,
# shoulders, elbows, wrists, hands)
SMPL_FLIP_PERM = (0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 23, 22)
_M = np.diag([1.0, -1.0, -1.0])


def flip_rotations(r: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> M R M."""
    return _M @ r @ _M


def hflip_person(p: PersonRaw) -> PersonRaw:
    """The same person in the horizontally mirrored image."""
    rots = np.concatenate([np.asarray(p.global_orient).reshape(1, 3, 3), np.asarray(p.body_pose).reshape(23, 3, 3)])
    rots = flip_rotations(rots)[list(SMPL_FLIP_PERM)]
    s, tx, ty = p.camera
    return PersonRaw(bbox=tuple(hflip_boxes(np.array([p.bbox]))[0]), score=p.score,
                     global_orient=rots[0].ravel(), body_pose=rots[1:].ravel(), betas=p.betas, camera=(s, -tx, ty))
