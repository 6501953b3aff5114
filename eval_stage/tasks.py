"""The evaluation's whole plan: the core :class:`~eval_stage.plan.Plan` and, on top of it, the plans of the
tasks beyond the dense maps (kNN on predicted globals, boxes from ``det``, captioning).

Each task's planner reads its own references, appends the manifests to ``plan.inputs`` (the cache key) and
says in ``plan.notes`` why it is skipped, when it is; kNN also adds its tokenizer to ``plan.tokenizers``.
"""

from __future__ import annotations

from fourm_core.manifest import Manifest
from fourm_core.store import ArtifactStore

from .boxes_eval import BoxPlan, plan_boxes
from .caption_eval import CaptionPlan, plan_captions
from .config import EvalConfig
from .knn_eval import KnnPlan, plan_knn
from .plan import Plan


class EvalPlan(Plan):
    """Everything the evaluation unit reads and runs, decided before it runs; a task that cannot run is None."""

    knn: KnnPlan | None
    boxes: BoxPlan | None
    captions: CaptionPlan | None

    def __init__(self, store: ArtifactStore, cfg: EvalConfig, ckpt: Manifest):
        super().__init__(store, cfg, ckpt)
        self.knn = plan_knn(store, cfg, self)
        self.boxes = plan_boxes(store, cfg, self)
        self.captions = plan_captions(store, cfg, self)
