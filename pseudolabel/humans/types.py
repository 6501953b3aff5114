"""What the pose labeler stores per image before pose tokenization: :class:`HumanPosesRaw`.

``Person`` (fourm_core.structured) needs the 8 pose-VQ codes, which only exist once the pose
VQ tokenizer (another stage) has run. So the labeler stores the 207-d body pose (23 rotation matrices,
row-major) next to everything else, and :func:`to_human_poses` fills ``pose_tokens`` with a given tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from fourm_core.structured import XYXY, HumanPoses, Person


def _plain(v):
    return v.tolist() if hasattr(v, "tolist") else v


def _vec(n: int):
    return Annotated[tuple[float, ...], BeforeValidator(_plain), Field(min_length=n, max_length=n)]


BODY_POSE_DIM = 207  # 23 joints x 3 x 3
PoseTokenizer = Callable[[np.ndarray], np.ndarray]  # (N, 207) float32 body poses -> (N, 8) int codes


class PersonRaw(BaseModel):
    """One person: ``bbox`` normalised xyxy (the detector's person box), ``score`` the detector score,
    ``global_orient`` root rotation 3x3 row-major (9), ``body_pose`` 23 joint rotations 3x3 row-major (207),
    ``betas`` SMPL shape (10, clipped to [-3, 3]), ``camera`` weak-perspective (s, tx, ty) of the person crop."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bbox: XYXY
    score: float | None = None
    global_orient: _vec(9)
    body_pose: _vec(BODY_POSE_DIM)
    betas: _vec(10)
    camera: _vec(3)


class HumanPosesRaw(BaseModel):
    """All persons of one image, in detector order (score descending); empty = nobody (serialises to "none")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    persons: list[PersonRaw] = Field(default_factory=list)


def to_human_poses(raw: HumanPosesRaw, pose_tokenizer: PoseTokenizer | None) -> HumanPoses:
    """The serialisable form. Needs a pose tokenizer unless there is nobody (then ``HumanPoses()``, "none")."""
    if not raw.persons:
        return HumanPoses()
    if pose_tokenizer is None:
        raise ValueError("pose_tokens need the pose VQ tokenizer: pass pose_tokenizer (N, 207) -> (N, 8)")
    body = np.array([p.body_pose for p in raw.persons], dtype=np.float32)
    codes = np.asarray(pose_tokenizer(body))
    if codes.shape != (len(raw.persons), 8):
        raise ValueError(f"pose tokenizer returned shape {codes.shape}, expected ({len(raw.persons)}, 8)")
    return HumanPoses(persons=[Person(bbox=p.bbox, pose_tokens=c, global_orient=p.global_orient, betas=p.betas,
                                      camera=p.camera) for p, c in zip(raw.persons, codes.tolist())])
