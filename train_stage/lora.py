"""LoRA fine-tuning of the 4M trunk with peft, and merging the adapters back into a plain checkpoint.

``add_lora`` injects peft LoRA layers into the attention and MLP projections of every block (in place: the
model stays a :class:`FourM`, its config and forward unchanged) and freezes everything else. A wrapped
linear ``X`` then holds ``X.base_layer.weight`` (frozen, the starting checkpoint's) and
``X.lora_A.default.weight`` (r, in) / ``X.lora_B.default.weight`` (out, r).

``merged_state`` turns such a state dict into the plain released-format one, ``X.weight = W + (α / r)·B·A``
(what peft's merge computes), so a LoRA run's committed ``data.safetensors`` loads strictly anywhere a
full checkpoint does. The adapters alone (``lora_state``) go to the run's ``data.lora.safetensors``: a
resume rebuilds the frozen base from the starting checkpoint and loads them, bit for bit.
"""

from __future__ import annotations

import torch
from torch import nn

from .model import FourM

ADAPTER = "default"


def add_lora(model: FourM, rank: int, alpha: float, targets: list[str]) -> FourM:
    """Inject LoRA into the linears whose name ends with one of ``targets``; only the adapters train."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, bias="none",
                        init_lora_weights=True)
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    for name, p in model.named_parameters():
        p.requires_grad_(".lora_" in name)
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"LoRA targets {targets} match no linear of the model (names such as attn.qkv, mlp.fc1)")
    return model


def lora_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapter tensors of a LoRA model's state dict."""
    return {k: v for k, v in state.items() if ".lora_" in k}


def merged_state(state: dict[str, torch.Tensor], rank: int, alpha: float) -> dict[str, torch.Tensor]:
    """A LoRA model's state dict -> the plain model's: every adapted linear folded into one weight."""
    scale = alpha / rank
    out = {}
    for k, v in state.items():
        if ".lora_" in k:
            continue
        if ".base_layer." in k:
            prefix, leaf = k.split(".base_layer.")
            if leaf == "weight":
                a = state[f"{prefix}.lora_A.{ADAPTER}.weight"].to(torch.float32)
                b = state[f"{prefix}.lora_B.{ADAPTER}.weight"].to(torch.float32)
                v = (v.to(torch.float32) + scale * (b @ a)).to(v.dtype)
            out[f"{prefix}.{leaf}"] = v
        else:
            out[k] = v
    return out


def load_lora(model: nn.Module, adapters: dict[str, torch.Tensor]) -> None:
    """Load the adapters of a LoRA checkpoint; every adapter of the model must be in it, nothing else."""
    want = set(lora_state(model.state_dict()))
    if set(adapters) != want:
        raise ValueError(f"LoRA adapters do not match the model: missing {sorted(want - set(adapters))[:5]}, "
                         f"unexpected {sorted(set(adapters) - want)[:5]}")
    model.load_state_dict(adapters, strict=False)
