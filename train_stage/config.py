"""The training config (validated YAML; presets in ``train_stage/presets/train``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from fourm_core.config import ConfigError, StrictModel, load_yaml, validate_config

from .mixture import PRESETS


class ModelSpec(StrictModel):
    size: Literal["tiny", "B", "L", "XL"] = "tiny"
    modalities: str | list[str] = "4m21"
    overrides: dict[str, Any] = Field(default_factory=dict, description="FourMConfig fields, e.g. dim")


class DataSpec(StrictModel):
    name: str
    weight: float = Field(1.0, gt=0)
    mixture: str | None = Field(None, description="masking mixture for this dataset (default: the run's)")
    modalities: list[str] | None = Field(None, description="modalities it provides (default: the model's)")


class InitSpec(StrictModel):
    """A committed checkpoint to start from (fine-tuning): ``<namespace>/checkpoints/<run>/step-NNNNNNNN``.

    Ours, or a released one committed with ``python -m train_stage import-pretrained``."""

    run: str
    namespace: str = "training"
    step: int | None = Field(None, ge=0, description="default: the run's latest checkpoint")


class LoraSpec(StrictModel):
    """LoRA fine-tuning (train_stage/lora.py): adapters of rank ``rank`` on the trunk's projections."""

    rank: int = Field(8, gt=0)
    alpha: float = Field(16.0, gt=0, description="adapter scale alpha / rank")
    targets: list[str] = Field(default_factory=lambda: ["qkv", "attn.proj", "self_attn.proj", "cross_attn.q",
                                                        "cross_attn.kv", "cross_attn.proj", "fc1", "fc2", "fc3"],
                               min_length=1, description="linear layers adapted (name suffixes)")


class TrainConfig(StrictModel):
    run_name: str = Field("run", pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-.]*$")
    model: ModelSpec = ModelSpec()
    mixture: str = "4m21"
    input_budget: int | None = Field(None, gt=0, description="override the mixture's budget")
    target_budget: int | None = Field(None, gt=0)
    datasets: list[DataSpec] = Field(min_length=1)
    batch_size: int = Field(8, gt=0, description="per rank and micro-step")
    grad_accum: int = Field(1, ge=1)
    steps: int = Field(100, gt=0, description="optimizer steps")
    blr: float = Field(1e-4, gt=0, description="lr = blr * global_batch / 256 (§6)")
    min_lr: float = 0.0
    warmup_tokens: float = Field(0.0, ge=0)
    total_tokens: float | None = Field(None, gt=0, description="cosine horizon; default: steps * tokens/step")
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = Field(None, gt=0)
    seed: int = 0
    num_workers: int = Field(0, ge=0)
    threads: int | None = Field(None, gt=0, description="torch CPU threads (None: torch's default); on a small "
                                                          "shared CPU one thread avoids OpenMP contention")
    dtype: Literal["fp32", "bf16"] = "bf16"  # bf16 autocast on GPU only; CPU runs fp32
    compile: bool = False
    distributed: Literal["auto", "ddp", "fsdp"] = "auto"  # auto: DDP when WORLD_SIZE > 1
    log_every: int = Field(1, gt=0)
    checkpoint_every: int = Field(0, ge=0, description="0: only at the end")
    peak_flops: float | None = Field(None, gt=0, description="per device, for MFU")
    namespace: str = Field("training", description="store 'dataset' under which checkpoints are committed")
    init_from: InitSpec | None = Field(None, description="start from this checkpoint's weights and architecture "
                                                         "(fine-tuning; `model` is then not used)")

    lora: LoraSpec | None = Field(None, description="train LoRA adapters only (needs init_from); the committed "
                                                    "weights are merged, data.lora.safetensors holds the adapters")

    @model_validator(mode="after")
    def _finetune_names_its_data(self) -> "TrainConfig":
        if self.lora is not None and self.init_from is None:
            raise ValueError("lora needs init_from: LoRA adapts a trained checkpoint")
        if self.init_from is not None and any(d.modalities is None for d in self.datasets):
            raise ValueError("with init_from, every dataset lists the modalities it provides (datasets[].modalities):"
                             " the model's are the checkpoint's, usually more than a fine-tuning dataset has")
        return self


def load_train_config(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = PRESETS / "train" / f"{name_or_path}.yaml"
        if not p.exists():
            raise ConfigError(f"{name_or_path!r} is neither a YAML file nor a train preset")
    data = load_yaml(p)
    for k, v in (overrides or {}).items():
        node = data
        *parents, leaf = k.split(".")
        for q in parents:
            node = node.setdefault(q, {})
        node[leaf] = v
    return validate_config(TrainConfig, data, str(p))
