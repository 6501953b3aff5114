"""Masking mixtures and dataset mixes as validated YAML presets (4M-FACTS §5).

A mixture is a list of weighted components; each gives per-modality input / target Dirichlet
concentrations (α = 0: the modality gets no tokens) and the ``keep`` mode of sequences. Presets
live in ``train_stage/presets/masking`` (``4m21``, ``4m7``, ``c4_caption``) and
``train_stage/presets/mix`` (``4m21_data``: CC12M 0.6 / COYO 0.2 / C4 0.2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from fourm_core.config import ConfigError, StrictModel, load_yaml, validate_config
from fourm_core.modalities import FOURM21, get_modality

PRESETS = Path(__file__).parent / "presets"
Keep = Literal["random", "all", "binary"]
BudgetMode = Literal["reference", "fill"]


class Component(StrictModel):
    """One mixture component. Maps are modality -> value with ``default`` for the rest."""

    name: str
    weight: float = Field(gt=0)
    input_alpha: dict[str, float]
    target_alpha: dict[str, float]
    keep: dict[str, Keep] = Field(default_factory=lambda: {"default": "random"})

    @model_validator(mode="after")
    def _check(self) -> "Component":
        for table in (self.input_alpha, self.target_alpha, self.keep):
            for k in table:
                if k != "default":
                    get_modality(k)
        for v in list(self.input_alpha.values()) + list(self.target_alpha.values()):
            if v < 0:
                raise ValueError(f"component {self.name}: Dirichlet alpha must be >= 0, got {v}")
        return self

    def alpha(self, modality: str, target: bool, as_written: bool = False) -> float:
        """The modality's Dirichlet alpha; 0 for a role the modality cannot take unless ``as_written``."""
        mod = get_modality(modality)
        if not as_written and (target and not mod.is_target or not target and not mod.is_input):
            return 0.0
        table = self.target_alpha if target else self.input_alpha
        return float(table.get(modality, table.get("default", 0.0)))

    def keep_mode(self, modality: str) -> str:
        return self.keep.get(modality, self.keep.get("default", "random"))


class MixtureConfig(StrictModel):
    name: str
    input_budget: int = Field(256, gt=0)
    target_budget: int = Field(256, gt=0)
    modalities: list[str] = Field(default_factory=lambda: list(FOURM21))
    components: list[Component] = Field(min_length=1)
    metadata_chunk: int = Field(2, ge=1, description="tokens per metadata key/value chunk (masked whole)")
    budget_mode: BudgetMode = Field(
        "reference",
        description="reference: the released models' budgets (Dirichlet shares capped by max_tokens; what a "
                    "cap or a short sequence cannot take stays unused; over-long sequence inputs are re-masked "
                    "with a lower keep probability); fill: capped shares are redistributed so every sample "
                    "fills input_budget / target_budget whenever it has the tokens (over-long inputs are cut)")

    @model_validator(mode="after")
    def _mods(self) -> "MixtureConfig":
        for m in self.modalities:
            get_modality(m)
        return self


class DatasetWeight(StrictModel):
    name: str
    weight: float = Field(gt=0)
    mixture: str = Field(description="masking mixture preset name or YAML path")
    modalities: list[str] | None = Field(None, description="modalities this dataset provides (None: the mixture's)")


class DataMixConfig(StrictModel):
    name: str
    datasets: list[DatasetWeight] = Field(min_length=1)


def _load(model, name_or_path: str, folder: str):
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = PRESETS / folder / f"{name_or_path}.yaml"
        if not p.exists():
            names = sorted(x.stem for x in (PRESETS / folder).glob("*.yaml"))
            raise ConfigError(f"{name_or_path!r} is neither a YAML file nor a {folder} preset; presets: {names}")
    return validate_config(model, load_yaml(p), str(p))


def load_mixture(name_or_path: str) -> MixtureConfig:
    return _load(MixtureConfig, name_or_path, "masking")


def load_data_mix(name_or_path: str) -> DataMixConfig:
    return _load(DataMixConfig, name_or_path, "mix")
