"""Crowdedness metadata (4M-FACTS §4: 5 n_humans)."""

from __future__ import annotations

from fourm_core.structured import HumanPoses
from pseudolabel.humans.types import HumanPosesRaw


def n_humans(poses: HumanPosesRaw | HumanPoses) -> int:
    """Number of persons the pose labeler found (detector 'person' boxes with score >= threshold)."""
    return len(poses.persons)
