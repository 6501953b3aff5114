"""What a labeler is: its declared outputs, needs, resources and the per-batch contract.

A labeler is a plain Python class. The stage reads its declarations to resolve the dependency graph,
to build cache keys and to size Ray actor pools; the runner calls ``setup`` once per process (actor) and
``label_batch`` per batch. Nothing here imports Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from fourm_core.config import StrictModel
from fourm_core.manifest import ModelRef

# Needs that come from the `images` artifact rather than from another labeler.
RGB = "rgb"
CAPTION = "caption"
# The synthetic scenes' exact labels (ingest's `ground_truth` artifact): what oracle labelers read, joined
# into the shard table as ``ground_truth.<column>`` like a committed need.
GROUND_TRUTH = "ground_truth"


class LabelerSettings(StrictModel):
    """Settings every labeler accepts (``pseudolabel.settings.<labeler>`` in the dataset config)."""

    batch_size: int | None = Field(None, gt=0, description="images per batch; None = the labeler's default")
    concurrency: int = Field(1, gt=0, description="Ray actors (model labelers) or tasks in the pool")
    num_cpus: float | None = Field(None, gt=0, description="CPUs per actor; None = the labeler's default")
    num_gpus: float | None = Field(None, ge=0, description="GPU fraction per actor; None = auto (declared if GPUs exist)")


class ModelSettings(LabelerSettings):
    """Settings of labelers backed by a neural network."""

    model: str = Field(description="'tiny', a local directory, an s3:// URI or a hub id")
    device: str = Field("auto", description="'auto' (cuda if available), 'cpu' or 'cuda[:N]'")
    matmul_precision: Literal["highest", "high", "medium"] = Field(
        "high", description="fp32 matmul precision on a GPU (torch.set_float32_matmul_precision): 'high' lets "
                            "matmuls use TF32 tensor cores (1.2-3x faster per image on an H200, measured by "
                            "bench/gpu_checks.sh), 'highest' keeps full fp32; no effect on CPU")
    autocast: Literal["off", "bf16"] = Field(
        "off", description="'bf16' runs the model under bfloat16 autocast (torch.autocast: matmuls, convolutions "
                           "and attention in bf16 on the GPU's tensor cores, reductions in fp32); the labels "
                           "change within bf16 rounding, so this is part of the cache key. 'off': fp32 (with "
                           "matmul_precision)")


@dataclass(frozen=True)
class Resources:
    """What one actor/task of a labeler asks Ray for."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0  # fraction of a GPU per actor when GPUs exist; ignored on CPU-only clusters
    memory_mb: int = 512


@dataclass
class Batch:
    """One batch as a labeler sees it. Lists are aligned; ``None`` marks a sample a need is missing for.

    ``rgb``: decoded images, uint8 H×W×3 (stored resolution). ``captions``: str or None.
    ``deps``: label name -> per-sample dict of that label's columns (already-committed or just computed).
    """

    keys: list[str]
    rgb: list[np.ndarray | None]
    captions: list[str | None]
    deps: dict[str, list[dict[str, Any] | None]] = field(default_factory=dict)
    meta: dict[str, list[Any]] = field(default_factory=dict)  # images columns: orig_width, orig_height

    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, idx: list[int]) -> "Batch":
        return Batch([self.keys[i] for i in idx], [self.rgb[i] for i in idx], [self.captions[i] for i in idx],
                     {k: [v[i] for i in idx] for k, v in self.deps.items()},
                     {k: [v[i] for i in idx] for k, v in self.meta.items()})


# A labeler's result for one sample: label name -> column name -> value (python scalar / bytes).
SampleResult = dict[str, dict[str, Any]]


class SampleFailure(Exception):
    """A labeler could not label one sample; ``reason`` is a short stable code for the errors table."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Labeler:
    """Base class. Subclasses set the class attributes and implement ``label_batch``.

    ``outputs``: label names it commits (each becomes artifact ``labels/<label>``).
    ``needs``: ``rgb``, ``caption`` and/or label names made by other labelers (hard needs).
    ``optional_needs``: labels used when their labeler is enabled, skipped otherwise.
    ``heavy_output``: raw features that are written only for the feature subset of shards.
    """

    name: ClassVar[str]
    outputs: ClassVar[tuple[str, ...]]
    needs: ClassVar[tuple[str, ...]] = (RGB,)
    optional_needs: ClassVar[tuple[str, ...]] = ()
    code_version: ClassVar[str] = "1"
    Settings: ClassVar[type[LabelerSettings]] = LabelerSettings
    default_batch_size: ClassVar[int] = 16
    resources: ClassVar[Resources] = Resources()
    uses_model: ClassVar[bool] = False
    heavy_output: ClassVar[bool] = False

    def __init__(self, settings: LabelerSettings | None = None, available: frozenset[str] = frozenset()):
        self.settings = settings if settings is not None else self.Settings()
        # labels actually available to this run (decides which optional needs are used)
        self.available = available

    # ---------------------------------------------------------------- declarations read by the stage

    @property
    def batch_size(self) -> int:
        return self.settings.batch_size or self.default_batch_size

    def active_needs(self) -> tuple[str, ...]:
        return tuple(self.needs) + tuple(n for n in self.optional_needs if n in self.available)

    def schema(self) -> dict[str, pa.Schema]:
        """label -> Arrow schema of its columns (``sample_key`` excluded)."""
        raise NotImplementedError

    def config_for_key(self) -> dict[str, Any]:
        """The part of the settings that changes outputs (goes into the cache key)."""
        # where and how precisely the arithmetic runs, not what it computes (like the device)
        drop = {"batch_size", "concurrency", "num_cpus", "num_gpus", "device", "matmul_precision"}
        data = self.settings.model_dump(mode="json")
        if data.get("autocast") == "off":  # how every label was made before the setting existed: same keys
            drop.add("autocast")
        return {k: v for k, v in data.items() if k not in drop} | {"needs": sorted(self.active_needs())}

    def model_ref(self) -> ModelRef | None:
        """Resolve the model source in the driver: checks it exists and digests its weights (fails fast)."""
        return None

    # --------------------------------------------------------------------------- per-process work

    def setup(self) -> None:
        """Load models; called once per process (Ray actor) before the first batch."""

    def label_batch(self, batch: Batch) -> list[SampleResult | Exception]:
        """Label a batch. Return one entry per sample: its result, or an exception for that sample only.

        Raising fails the whole batch; the runner then retries sample by sample to isolate the culprit.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings!r})"
