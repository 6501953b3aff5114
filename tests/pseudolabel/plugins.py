"""Test labelers loaded through the config's `plugins` (they run in Ray actors like model labelers)."""

from __future__ import annotations

import os
import threading
import time
from typing import ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from fourm_core.manifest import ModelRef
from pseudolabel.spec import RGB, Batch, Labeler, LabelerSettings, Resources


class FaultySettings(LabelerSettings):
    fail_keys: list[str] = Field(default_factory=list, description="samples whose labelling raises")
    sleep_s: float = 0.0
    pid_dir: str | None = None


class FaultyLabeler(Labeler):
    """Mean colour of the image; raises for ``fail_keys``; can sleep and report its pid (kill tests)."""

    name: ClassVar[str] = "faulty"
    outputs: ClassVar[tuple[str, ...]] = ("faulty",)
    needs: ClassVar[tuple[str, ...]] = (RGB,)
    Settings: ClassVar[type[LabelerSettings]] = FaultySettings
    default_batch_size: ClassVar[int] = 2
    resources: ClassVar[Resources] = Resources(num_cpus=1)
    uses_model: ClassVar[bool] = True  # -> a Ray actor pool

    def config_for_key(self):
        return super().config_for_key() | {"sleep_s": None, "pid_dir": None}

    def model_ref(self) -> ModelRef:
        return ModelRef(id="faulty", source="none", digest="0")

    def setup(self) -> None:
        if self.settings.pid_dir:
            with open(os.path.join(self.settings.pid_dir, f"{os.getpid()}.pid"), "w") as f:
                f.write(str(os.getpid()))

    def schema(self):
        return {"faulty": pa.schema([("mean", pa.float32()), ("pid", pa.int32())])}

    def label_batch(self, batch: Batch) -> list:
        # one model, one batch at a time: an actor running two calls must not enter it twice (a sample error if so)
        in_batch = self.__dict__.setdefault("_in_batch", threading.Lock())
        if not in_batch.acquire(blocking=False):
            raise RuntimeError("label_batch entered by two calls at once")
        try:
            time.sleep(self.settings.sleep_s)
            if any(k in self.settings.fail_keys for k in batch.keys):
                raise ValueError(f"boom on {[k for k in batch.keys if k in self.settings.fail_keys]}")
            return [{"faulty": {"mean": float(np.mean(im)), "pid": os.getpid()}} for im in batch.rgb]
        finally:
            in_batch.release()


class NodeSettings(LabelerSettings):
    sleep_s: float = Field(0.0, ge=0, description="seconds per batch, so that batches overlap and spread over nodes")


class RayNodeLabeler(Labeler):
    """The Ray node each sample was labelled on (``ray.get_runtime_context().get_node_id()``; empty outside Ray):
    where pseudolabel work ran, reported by the work itself, however the runner schedules it (tasks, actors)."""

    name: ClassVar[str] = "ray_node"
    outputs: ClassVar[tuple[str, ...]] = ("ray_node",)
    needs: ClassVar[tuple[str, ...]] = (RGB,)
    Settings: ClassVar[type[LabelerSettings]] = NodeSettings
    default_batch_size: ClassVar[int] = 1
    resources: ClassVar[Resources] = Resources(num_cpus=1)

    def config_for_key(self):
        return super().config_for_key() | {"sleep_s": None}

    def schema(self):
        return {"ray_node": pa.schema([("node_id", pa.string()), ("pid", pa.int32())])}

    def label_batch(self, batch: Batch) -> list:
        import ray

        time.sleep(self.settings.sleep_s)
        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
        return [{"ray_node": {"node_id": node, "pid": os.getpid()}} for _ in batch.rgb]
