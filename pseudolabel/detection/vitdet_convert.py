"""detectron2's released ViTDet checkpoints -> our :class:`~.vitdet.ViTDetForObjectDetection` directory.

detectron2 publishes ``model_final_*.pkl`` (a pickle of ``{"model": {name: numpy array}, ...}``) and its
checkpointer writes ``.pth`` (``torch.save`` of the same dict with tensors). Both are read without running code:
``.pth`` with ``torch.load(weights_only=True)``, ``.pkl`` with an unpickler that only rebuilds numpy arrays.
Names are detectron2's everywhere except inside the ViT, which is transformers' ``VitDetBackbone``:

    backbone.net.pos_embed              -> backbone.net.embeddings.position_embeddings
    backbone.net.patch_embed.proj.*     -> backbone.net.embeddings.projection.*
    backbone.net.blocks.<i>.attn.*      -> backbone.net.encoder.layer.<i>.attention.*
    backbone.net.blocks.<i>.<other>     -> backbone.net.encoder.layer.<i>.<other>   (norm1, norm2, mlp.fc1/2)

``pixel_mean`` / ``pixel_std`` (input normalisation, applied by the detector's preprocessing) are dropped.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from fourm_core.checkpoints import read_state_dict

_BLOCK = re.compile(r"^backbone\.net\.blocks\.(\d+)\.(.+)$")
_DROPPED = {"pixel_mean", "pixel_std"}


def released_to_ours(name: str) -> str | None:
    """Our name of one detectron2 ViTDet parameter (None: not a parameter of ours)."""
    if name in _DROPPED:
        return None
    if name == "backbone.net.pos_embed":
        return "backbone.net.embeddings.position_embeddings"
    if name.startswith("backbone.net.patch_embed.proj."):
        return "backbone.net.embeddings.projection." + name.rsplit(".", 1)[1]
    m = _BLOCK.match(name)
    if m:
        i, rest = m.groups()
        rest = "attention." + rest.removeprefix("attn.") if rest.startswith("attn.") else rest
        return f"backbone.net.encoder.layer.{i}.{rest}"
    if name.startswith("backbone.net."):
        raise KeyError(f"unknown ViTDet backbone parameter {name!r}")
    return name


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a detectron2 checkpoint (``.pkl``, ``.pth`` or ``.safetensors``) as tensors, read by the
    shared safe reader (``.pkl``: numpy arrays only)."""
    return read_state_dict(path, keys=("model",))


def convert_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {ours: v for k, v in state.items() if (ours := released_to_ours(k)) is not None}


def convert_checkpoint(checkpoint: str | Path, out: str | Path, profile: str = "full") -> Path:
    """Released ViTDet-H Cascade checkpoint -> a detector directory (``family: vitdet``), loaded strictly."""
    from .detector import Detector, save_detector
    from .families import build_config, get_family
    from .vitdet import ViTDetForObjectDetection

    model = ViTDetForObjectDetection(build_config("vitdet", profile)).eval()
    model.load_state_dict(convert_state_dict(read_checkpoint(checkpoint)), strict=True)
    save_detector(Detector(model=model, family=get_family("vitdet")), out)
    return Path(out)
