"""3D human pose and shape (4M-21 ``human_poses``) in the 4D-Humans / HMR2.0 form.

Person boxes come from the ``det`` label (the detection labeler); each person crop goes through our
HMR2-style model (ViT backbone + transformer head -> SMPL global orientation, 23 body-joint rotations,
10 betas, weak-perspective camera). An image without people stores ``n_humans = 0`` and empty lists
(serialised as "none"). Production: the released HMR2.0 checkpoint (4D-Humans, MIT), converted once with
``python -m pseudolabel convert-hmr2 epoch=35-step=1000000.ckpt models/hmr2``.
"""

from __future__ import annotations

from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from ..spec import RGB, Batch, Resources
from .model_base import HFModelSettings, ModelLabeler


class HumanPosesSettings(HFModelSettings):
    model: str = "./models/hmr2"
    rescale: float = Field(1.0, gt=0, description="grow each person box by this factor before cropping")
    max_persons: int = Field(20, gt=0, description="persons per image, highest detector scores first")


class HumanPosesLabeler(ModelLabeler):
    name: ClassVar[str] = "human_poses"
    outputs: ClassVar[tuple[str, ...]] = ("human_poses",)
    needs: ClassVar[tuple[str, ...]] = (RGB, "det")
    code_version: ClassVar[str] = "1"
    Settings: ClassVar[type[HFModelSettings]] = HumanPosesSettings
    default_batch_size: ClassVar[int] = 8
    resources: ClassVar[Resources] = Resources(num_cpus=1, num_gpus=0.25, memory_mb=4096)

    def build_tiny(self):
        from ..humans import build_pose_model

        return build_pose_model("tiny")

    def build_full(self):
        from ..humans import build_pose_model

        return build_pose_model("full")

    def load_dir(self, path: str):
        from ..humans import load_pose_model

        return load_pose_model(path)

    def save(self, model, path: str) -> None:
        from ..humans import save_pose_model

        save_pose_model(model, path)

    def schema(self) -> dict[str, pa.Schema]:
        from ..humans.columns import schema

        return {"human_poses": schema()}

    def label_batch(self, batch: Batch) -> list:
        from fourm_core.structured import Detections

        from ..humans import PoseEstimator, estimate_poses
        from ..humans.columns import to_table
        from ..spec import SampleFailure

        have = [i for i, d in enumerate(batch.deps["det"]) if d is not None]
        dets = [Detections.model_validate_json(batch.deps["det"][i]["det"]) for i in have]
        estimator = PoseEstimator(self.model, rescale=self.settings.rescale, max_persons=self.settings.max_persons)
        rows = to_table(estimate_poses(estimator, [batch.rgb[i] for i in have], dets)).to_pylist()
        out: list = [SampleFailure("missing_det", "no detection boxes for this sample")] * len(batch)
        for i, row in zip(have, rows):
            out[i] = {"human_poses": row}
        return out
