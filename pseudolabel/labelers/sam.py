"""SAM instances and SAM edges (4M-21 ``sam_instance``, ``tok_sam_edge@224``) with our fast generator.

Wraps :mod:`pseudolabel.sam`: one ``Sam`` per actor, :class:`FastMaskGenerator` on a point grid (32×32
as the paper), instances stored as COCO compressed RLE in the mask frame with box, area, predicted IoU
and stability score; edges = Canny on the rendered instance map, resized to the stored image size so
they align with every other label. Production: ViT-H (``sam_vit_h_4b8939.pth``, Apache-2.0) converted
once with ``python -m pseudolabel convert-sam sam_vit_h_4b8939.pth models/sam_vit_h``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import cv2
import pyarrow as pa
from pydantic import Field

from ..codecs import png_encode
from ..spec import RGB, Batch, Resources
from .model_base import HFModelSettings, ModelLabeler

_INSTANCE = pa.struct([("counts", pa.string()), ("bbox", pa.list_(pa.float32(), 4)), ("area", pa.int32()),
                       ("predicted_iou", pa.float32()), ("stability_score", pa.float32())])


class SamSettings(HFModelSettings):
    model: str = "./models/sam_vit_h"
    points_per_side: int = Field(32, gt=0, description="point grid per side (the paper: 32)")
    pred_iou_thresh: float = Field(0.88, ge=0, le=1)
    stability_score_thresh: float = Field(0.95, ge=0, le=1)
    stability_score_offset: float = Field(1.0, gt=0, description="logit offset of the stability score")
    box_nms_thresh: float = Field(0.7, gt=0, le=1)
    output_size: int | None = Field(None, gt=0, description="low-resolution mode: longest side of the mask frame")
    points_per_batch: int = Field(256, gt=0, description="prompts per decoder pass (speed only)")


class SamLabeler(ModelLabeler):
    name: ClassVar[str] = "sam"
    outputs: ClassVar[tuple[str, ...]] = ("sam_instance", "sam_edge")
    needs: ClassVar[tuple[str, ...]] = (RGB,)
    code_version: ClassVar[str] = "1"
    Settings: ClassVar[type[HFModelSettings]] = SamSettings
    default_batch_size: ClassVar[int] = 4
    resources: ClassVar[Resources] = Resources(num_cpus=1, num_gpus=0.5, memory_mb=4096)

    def build_tiny(self):
        from ..sam.model import build_sam

        return build_sam("tiny")

    def build_full(self):
        from ..sam.model import build_sam

        return build_sam("vit_h", nondegenerate=False)

    def load_dir(self, path: str):
        from ..sam.model import load_sam

        return load_sam(path).model

    def save(self, model, path: str) -> None:
        from ..sam.model import infer_profile, save_sam

        save_sam(model, path, infer_profile(model.state_dict()))

    def config_for_key(self) -> dict[str, Any]:
        return {k: v for k, v in super().config_for_key().items() if k != "points_per_batch"}

    def schema(self) -> dict[str, pa.Schema]:
        return {"sam_instance": pa.schema([("n_instances", pa.int32()), ("mask_height", pa.int32()),
                                           ("mask_width", pa.int32()), ("instances", pa.list_(_INSTANCE))]),
                "sam_edge": pa.schema([("edges", pa.binary())])}

    def setup(self) -> None:
        super().setup()
        from ..sam.fast_amg import AmgSettings, FastMaskGenerator

        s = self.settings
        self.generator = FastMaskGenerator(self.model, AmgSettings(
            points_per_side=s.points_per_side, pred_iou_thresh=s.pred_iou_thresh,
            stability_score_thresh=s.stability_score_thresh,
            stability_score_offset=s.stability_score_offset, box_nms_thresh=s.box_nms_thresh,
            points_per_batch=s.points_per_batch, output_size=s.output_size))

    def label_batch(self, batch: Batch) -> list:
        from ..sam.instances import label_image

        out = []
        for rgb in batch.rgb:
            res = label_image(self.model, rgb, generator=self.generator)
            h, w = rgb.shape[:2]
            edges = res.edges
            if edges.shape != (h, w):  # low-resolution mode: align with the image like every other label
                edges = cv2.resize(edges, (w, h), interpolation=cv2.INTER_NEAREST)
            instances = [{"counts": i.rle["counts"], "bbox": list(i.bbox), "area": i.area,
                          "predicted_iou": i.predicted_iou, "stability_score": i.stability_score}
                         for i in res.instances]
            out.append({"sam_instance": {"n_instances": len(instances), "mask_height": res.mask_size[0],
                                         "mask_width": res.mask_size[1], "instances": instances},
                        "sam_edge": {"edges": png_encode(edges)}})
        return out


def instance_masks(row: dict) -> list:
    """A stored ``labels/sam_instance`` row -> its (mask_height, mask_width) bool masks."""
    from ..sam.instances import decode_mask

    size = [row["mask_height"], row["mask_width"]]
    return [decode_mask({"size": size, "counts": inst["counts"]}) for inst in row["instances"] or []]
