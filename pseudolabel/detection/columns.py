"""Proposed Parquet columns of the detection labeler: ``det`` (string, the JSON of :class:`Detections`, as
``STRUCTURED_TYPES["det"].model_validate_json`` reads it), ``n_coco_instances`` and
``coco_instance_diversity`` (int32). Boxes are few (typically < 20) and variable, so JSON costs little."""

from __future__ import annotations

import pyarrow as pa

from fourm_core.structured import Detections
from pseudolabel.detection.metadata import coco_instance_diversity, n_coco_instances
from pseudolabel.detection.postprocess import SCORE_THRESHOLD


def schema() -> pa.Schema:
    return pa.schema([("det", pa.string()), ("n_coco_instances", pa.int32()),
                      ("coco_instance_diversity", pa.int32())])


def to_table(rows: list[Detections], threshold: float = SCORE_THRESHOLD) -> pa.Table:
    """One row per image; the counts use the boxes with score >= ``threshold`` (the labeler's)."""
    return pa.Table.from_pydict({"det": [d.model_dump_json() for d in rows],
                                 "n_coco_instances": [n_coco_instances(d, threshold) for d in rows],
                                 "coco_instance_diversity": [coco_instance_diversity(d, threshold) for d in rows]},
                                schema=schema())


def from_table(table: pa.Table) -> list[Detections]:
    return [Detections.model_validate_json(s) for s in table.column("det").to_pylist()]
