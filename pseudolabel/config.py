"""The pseudolabel section of a dataset config, validated by the stage before any work starts."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from fourm_core.config import ConfigError, DatasetConfig, StrictModel, validate_config

from .spec import LabelerSettings

# Cheap default selection: what the demo runs with tiny profiles. Production configs list what they want.
DEFAULT_LABELERS = ["canny", "color_palette", "depth", "normals", "semseg", "clip", "dinov2", "imagebind", "t5",
                    "sam", "detection", "human_poses", "metadata"]


class FeatureSubset(StrictModel):
    """Which shards get the large raw outputs (feature maps, T5 embeddings): the tokenizer-training subset."""

    every: int = Field(1, gt=0, description="shards whose index is a multiple of this")
    shards: list[int] | None = Field(None, description="explicit shard list (overrides `every`)")

    def contains(self, shard: int) -> bool:
        return shard in self.shards if self.shards is not None else shard % self.every == 0


class PseudolabelConfig(StrictModel):
    labelers: list[str] = Field(default_factory=lambda: list(DEFAULT_LABELERS), min_length=1)
    profile: Literal["production", "tiny", "oracle"] = Field(
        "production", description="tiny = model labelers without an explicit `model` build tiny random-weight "
                                  "models; oracle = tiny, and on shards with ground truth (synthetic scenes) the "
                                  "depth, normals, semseg and detection labels of those scenes are their exact "
                                  "ground truth")
    runner: Literal["ray", "local"] = "ray"
    ray_address: str | None = Field(None, description="None = a local Ray runtime (or the one already up)")
    settings: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-labeler settings")
    feature_subset: FeatureSubset = FeatureSubset()
    plugins: list[str] = Field(default_factory=list, description="extra labelers as 'module:Class'")

    @model_validator(mode="after")
    def _check(self) -> "PseudolabelConfig":
        from .registry import labeler_class, resolve_order

        plugins = tuple(self.plugins)
        for name in self.labelers:
            labeler_class(name, plugins)  # KeyError with the known names
        for name, data in self.settings.items():
            labeler_class(name, plugins).Settings.model_validate(data)
        resolve_order(self.labelers, plugins)
        return self

    def settings_for(self, name: str, ground_truth: bool = False) -> LabelerSettings:
        """A labeler's settings under this profile; ``ground_truth``: the shard has ground-truth rows."""
        from .registry import labeler_class

        cls = labeler_class(name, tuple(self.plugins))
        data = dict(self.settings.get(name, {}))
        fields = cls.Settings.model_fields
        if self.profile in ("tiny", "oracle") and "model" in fields and "model" not in data:
            data["model"] = "tiny"
        if "oracle" in fields:
            # on a shard without ground truth an oracle labeler is its model: same settings, same cache key
            data["oracle"] = ground_truth and data.get("oracle", self.profile == "oracle")
        return cls.Settings.model_validate(data)


def pseudolabel_config(dataset: DatasetConfig, overrides: dict[str, Any] | None = None) -> PseudolabelConfig:
    """Validate ``dataset.pseudolabel`` (plus overrides such as a labeler selection); errors name the field."""
    data = dict(dataset.pseudolabel)
    data.update(overrides or {})
    try:
        return validate_config(PseudolabelConfig, data, f"dataset '{dataset.name}' section pseudolabel")
    except (KeyError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"dataset '{dataset.name}' section pseudolabel: {exc}") from None
