"""Object boxes in the COCO-80 label space (4M ``det``), score ≥ 0.6.

Wraps :mod:`pseudolabel.detection`. Default: the papers' detector, ViTDet-H with a Cascade Mask R-CNN head
(detectron2's COCO checkpoint converted with ``python -m pseudolabel convert-vitdet``); RT-DETR, DETR and
Deformable-DETR (transformers) load as faster options, their class names mapped onto COCO-80 by name. Stored per image: the
``Detections`` JSON (normalised xyxy, class name, score) plus the COCO-clutter and instance-diversity counts.
Oracle (``profile: oracle``): a synthetic scene's ground-truth boxes, each with score 1.0, stored the same way.
"""

from __future__ import annotations

from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from ..spec import RGB, Batch, Resources, SampleFailure
from .model_base import HFModelSettings, ModelLabeler, OracleSettings


class DetectionSettings(OracleSettings):
    model: str = "./models/vitdet_h"  # python -m pseudolabel convert-vitdet model_final_*.pkl ./models/vitdet_h
    family: str = Field("vitdet", description="detector family: vitdet, rt_detr, detr or deformable_detr")
    threshold: float = Field(0.6, ge=0, le=1, description="keep boxes with score >= threshold (4M: 0.6)")
    person_threshold: float = Field(0.5, ge=0, le=1, description="persons are also kept down to this score: "
                                    "4D-Humans takes ViTDet persons with score > 0.5 for its pose crops (the det "
                                    "tokens and the counts still use `threshold`)")
    max_detections: int = Field(100, gt=0, description="boxes kept per image, best first")
    input_size: int | None = Field(None, gt=0, description="network input side; None = the family's default")


class DetectionLabeler(ModelLabeler):
    name: ClassVar[str] = "detection"
    outputs: ClassVar[tuple[str, ...]] = ("det",)
    needs: ClassVar[tuple[str, ...]] = (RGB,)
    # 2: ViTDet-H Cascade by default; persons kept down to person_threshold. 3: the oracle path
    code_version: ClassVar[str] = "3"
    Settings: ClassVar[type[HFModelSettings]] = DetectionSettings
    default_batch_size: ClassVar[int] = 8
    resources: ClassVar[Resources] = Resources(num_cpus=1, num_gpus=0.25, memory_mb=3072)

    def build_tiny(self):
        from ..detection import build_detector

        return build_detector(self.settings.family, "tiny").model

    def build_full(self):
        from ..detection import build_detector

        return build_detector(self.settings.family, "full").model

    def load_dir(self, path: str):
        from ..detection import load_detector

        detector = load_detector(path)
        self._family = detector.family.name
        return detector.model

    def save(self, model, path: str) -> None:
        from ..detection import Detector, get_family, save_detector

        save_detector(Detector(model=model, family=get_family(self.settings.family)), path)

    def schema(self) -> dict[str, pa.Schema]:
        from ..detection.columns import schema

        return {"det": schema()}

    def setup(self) -> None:
        super().setup()
        from ..detection import Detector, get_family, with_input_size

        family = get_family(getattr(self, "_family", self.settings.family))
        self.detector = Detector(model=self.model, family=family,
                                 threshold=min(self.settings.threshold, self.settings.person_threshold),
                                 max_detections=self.settings.max_detections, batch_size=self.batch_size)
        if self.settings.input_size:
            with_input_size(self.detector, self.settings.input_size)

    def label_batch(self, batch: Batch) -> list:
        from fourm_core.structured import Detections

        from ..detection import detect
        from ..detection.columns import to_table

        t, tp = self.settings.threshold, self.settings.person_threshold
        kept = [Detections(boxes=[b for b in d.boxes if b.score >= t or (b.class_name == "person" and b.score > tp)])
                for d in detect(self.detector, batch.rgb)]
        rows = to_table(kept, t).to_pylist()
        return [{"det": row} for row in rows]

    def oracle_label(self, gt: dict) -> dict:
        """The scene's boxes (``boxes`` JSON: normalised xyxy + COCO class name), each with score 1.0."""
        import json

        from fourm_core.structured import Box, Detections

        from ..detection.columns import to_table

        try:
            boxes = [Box(xyxy=b["xyxy"], class_name=b["class"], score=1.0) for b in json.loads(gt["boxes"])]
        except (TypeError, KeyError, ValueError) as exc:
            raise SampleFailure("oracle_boxes", f"ground_truth boxes unreadable: {exc}") from None
        return {"det": to_table([Detections(boxes=boxes)], self.settings.threshold).to_pylist()[0]}
