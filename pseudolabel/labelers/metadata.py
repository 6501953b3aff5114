"""The metadata labeler: 4M-21 metadata (4M-FACTS §4) from the image, caption and other labels.

It is a thin driver over :mod:`.meta_providers`: each provider declares its needs; the labeler's
optional needs are the union, and a provider runs when its needs are available in this run (so its
cache key changes when a provider joins). Column ``providers`` records which ran for the row.
"""

from __future__ import annotations

from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from ..spec import CAPTION, RGB, Batch, Labeler, LabelerSettings, Resources
from .meta_providers import PENDING_FIELDS, PROVIDERS


class MetadataSettings(LabelerSettings):
    providers: list[str] = Field(default_factory=lambda: [p.name for p in PROVIDERS],
                                 description="providers to run (when their needs are available)")


class MetadataLabeler(Labeler):
    name: ClassVar[str] = "metadata"
    outputs: ClassVar[tuple[str, ...]] = ("metadata",)
    needs: ClassVar[tuple[str, ...]] = (RGB, CAPTION)
    optional_needs: ClassVar[tuple[str, ...]] = ("semseg", "depth", "normal", "sam_instance", "det", "human_poses")
    code_version: ClassVar[str] = "2"
    Settings: ClassVar[type[LabelerSettings]] = MetadataSettings
    default_batch_size: ClassVar[int] = 32
    resources: ClassVar[Resources] = Resources(num_cpus=1, memory_mb=256)

    def active_providers(self):
        avail = set(self.active_needs())
        return [p for p in PROVIDERS if p.name in self.settings.providers and set(p.needs) <= avail]

    def schema(self) -> dict[str, pa.Schema]:
        fields = {}
        for p in PROVIDERS:
            fields.update(p.fields)
        fields.update(PENDING_FIELDS)
        return {"metadata": pa.schema([*fields.items(), ("providers", pa.string())])}

    def label_batch(self, batch: Batch) -> list:
        provs = self.active_providers()
        names = ",".join(p.name for p in provs)
        out = []
        for i in range(len(batch)):
            x = {RGB: batch.rgb[i], CAPTION: batch.captions[i]}
            x.update({m: v[i] for m, v in batch.meta.items()})
            x.update({d: rows[i] for d, rows in batch.deps.items()})
            row = {f: None for f in self.schema()["metadata"].names}
            for p in provs:
                row.update(p.compute(x))
            row["providers"] = names
            out.append({"metadata": row})
        return out
