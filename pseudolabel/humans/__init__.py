"""3D human pose and shape labeler core (4M-21 ``human_poses``): detector person boxes -> HMR2-style model.

Public API: :func:`estimate_poses`, :class:`PoseEstimator`, :class:`HMR2` / :class:`HMR2Config` (profiles
``TINY``, ``FULL``), weights I/O (:func:`build_pose_model`, :func:`save_pose_model`, :func:`load_pose_model`,
:func:`load_hmr2_checkpoint`, :func:`hmr2_to_ours`), stored types (:class:`HumanPosesRaw`,
:func:`to_human_poses`), metadata :func:`n_humans`.
"""

from pseudolabel.humans.checkpoint import (
    build_pose_model,
    hmr2_to_ours,
    load_hmr2_checkpoint,
    load_pose_model,
    ours_to_hmr2,
    save_pose_model,
)
from pseudolabel.humans.config import FULL, TINY, HMR2Config
from pseudolabel.humans.estimate import PoseEstimator, estimate_poses
from pseudolabel.humans.metadata import n_humans
from pseudolabel.humans.model import HMR2
from pseudolabel.humans.types import HumanPosesRaw, PersonRaw, to_human_poses

__all__ = [
    "FULL", "HMR2", "TINY", "HMR2Config", "HumanPosesRaw", "PersonRaw", "PoseEstimator", "build_pose_model",
    "estimate_poses", "hmr2_to_ours", "load_hmr2_checkpoint", "load_pose_model", "n_humans", "ours_to_hmr2",
    "save_pose_model", "to_human_poses",
]
