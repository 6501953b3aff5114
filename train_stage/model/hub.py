"""One loading path for 4M weights: a local directory, an ``s3://`` prefix or a hub id.

Format (4M-FACTS §9): ``config.json`` + ``model.safetensors`` with the released tensor names, so the
official 4M-7 / 4M-21 checkpoints load with ``strict=True`` and what we save loads in their code.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import FourMConfig
from .fourm import FourM

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_pretrained(model: FourM, directory: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (every state-dict entry, tied ones included)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # clone: safetensors refuses tensors that share storage (tied modality embeddings)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    (directory / CONFIG_NAME).write_text(model.config.to_json())
    return directory


def _local_dir(source: str) -> Path:
    """Resolve ``source`` to a local directory holding config.json and model.safetensors."""
    if os.path.isdir(source):
        return Path(source)
    if "://" in source:  # s3:// or any fsspec URL: copy the two files to a temporary folder
        import fsspec

        fs, path = fsspec.core.url_to_fs(source)
        tmp = Path(tempfile.mkdtemp(prefix="fourm-"))
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            fs.get(f"{path.rstrip('/')}/{name}", str(tmp / name))
        return tmp
    try:  # a hub id such as EPFL-VILAB/4M-21_B
        from huggingface_hub import snapshot_download
    except ImportError as err:  # pragma: no cover - huggingface_hub ships with transformers
        raise FileNotFoundError(f"{source!r} is not a directory and huggingface_hub is not installed") from err
    return Path(snapshot_download(source, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME]))


def load_state(model: FourM, state: dict[str, torch.Tensor]) -> None:
    """Load strictly; a file that stores a tied modality embedding once gets it filled from its twin."""
    for dec, enc in model.tied_parameter_names().items():
        if dec not in state and enc in state:
            state[dec] = state[enc]
        if enc not in state and dec in state:
            state[enc] = state[dec]
    model.load_state_dict(state, strict=True)


def from_pretrained(source: str | Path, map_location: str | torch.device = "cpu") -> FourM:
    """Build the model described by ``config.json`` and load ``model.safetensors`` with strict=True."""
    directory = _local_dir(str(source))
    config_name, weights_name = CONFIG_NAME, WEIGHTS_NAME
    if not (directory / WEIGHTS_NAME).exists() and (directory / "data.safetensors").exists():
        # a training checkpoint committed to the artifact store (data.safetensors + data.config.json)
        config_name, weights_name = "data.config.json", "data.safetensors"
    config = FourMConfig.from_json_file(directory / config_name)
    model = FourM(config)
    load_state(model, load_file(str(directory / weights_name), device=str(map_location)))
    return model.to(map_location)
