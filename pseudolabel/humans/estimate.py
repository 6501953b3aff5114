"""``estimate_poses``: person boxes from the detector -> HMR2-style SMPL parameters per person."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fourm_core.structured import Detections
from pseudolabel.detection.boxes import to_pixels
from pseudolabel.humans.crops import crops_tensor
from pseudolabel.humans.model import HMR2
from pseudolabel.humans.types import HumanPosesRaw, PersonRaw

PERSON = "person"
BETA_LIMIT = 3.0  # 4M serialises betas over [-3, 3]


@dataclass
class PoseEstimator:
    """The pose model plus how it is fed. ``rescale`` grows each person box before cropping (4D-Humans'
    ``rescale_factor``); ``max_persons`` caps persons per image (highest detector scores first; the
    serialiser keeps 7); ``batch_size`` is the number of person crops per forward pass."""

    model: HMR2
    rescale: float = 1.0
    max_persons: int = 20
    batch_size: int = 32

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def person_boxes(dets: Detections, max_persons: int) -> list:
    """The 'person' boxes of ``dets`` in their order (score descending from ``detect``), at most max_persons."""
    return [b for b in dets.boxes if b.class_name == PERSON][:max_persons]


@torch.inference_mode()
def run_crops(model: HMR2, crops: torch.Tensor, batch_size: int) -> dict[str, np.ndarray]:
    """(N, 3, H, W) crops -> numpy global_orient (N, 9), body_pose (N, 207), betas (N, 10), camera (N, 3)."""
    dev = next(model.parameters()).device
    parts: dict[str, list[np.ndarray]] = {"global_orient": [], "body_pose": [], "betas": [], "camera": []}
    for s in range(0, len(crops), batch_size):
        out = model(crops[s: s + batch_size].to(dev))
        n = out.betas.shape[0]
        parts["global_orient"].append(out.global_orient.reshape(n, 9).float().cpu().numpy())
        parts["body_pose"].append(out.body_pose.reshape(n, 207).float().cpu().numpy())
        parts["betas"].append(out.betas.float().cpu().numpy())
        parts["camera"].append(out.camera.float().cpu().numpy())
    return {k: np.concatenate(v) if v else np.zeros((0, 0), np.float32) for k, v in parts.items()}


def estimate_poses(pose_model: PoseEstimator, images: list[np.ndarray], detections: list[Detections]
                   ) -> list[HumanPosesRaw]:
    """One :class:`HumanPosesRaw` per image from its detections (normalised boxes, class 'person').

    images: HxWx3 uint8 RGB. All person crops of the call are batched together. An image without person
    boxes gets ``HumanPosesRaw(persons=[])``, which serialises to "none".
    """
    if len(images) != len(detections):
        raise ValueError(f"{len(images)} images but {len(detections)} detections")
    cfg = pose_model.model.cfg
    owners: list[int] = []
    boxes: list = []
    crops: list[torch.Tensor] = []
    for i, (im, dets) in enumerate(zip(images, detections)):
        people = person_boxes(dets, pose_model.max_persons)
        if not people:
            continue
        h, w = im.shape[:2]
        px = to_pixels(np.array([b.xyxy for b in people]), w, h)
        crops.append(crops_tensor(im, px, cfg, pose_model.rescale))
        owners += [i] * len(people)
        boxes += people
    persons: list[list[PersonRaw]] = [[] for _ in images]
    if boxes:
        out = run_crops(pose_model.model, torch.cat(crops), pose_model.batch_size)
        # rotation entries are in [-1, 1] up to float error; clip so the stored values honour the contract
        go = np.clip(out["global_orient"], -1.0, 1.0)
        betas = np.clip(out["betas"], -BETA_LIMIT, BETA_LIMIT)
        for k, (i, box) in enumerate(zip(owners, boxes)):
            persons[i].append(PersonRaw(bbox=box.xyxy, score=box.score, global_orient=go[k],
                                        body_pose=out["body_pose"][k], betas=betas[k], camera=out["camera"][k]))
    return [HumanPosesRaw(persons=p) for p in persons]
