"""One loading path for 4M weights: a local directory, an ``s3://`` (any fsspec) prefix or a hub id.

Format (4M-FACTS §9): ``config.json`` + ``model.safetensors`` exactly as the reference's
``FM.save_pretrained`` writes them, with no renaming in either direction:

* the state-dict names and shapes are the released ones (norms without bias keep an all-zero
  ``bias`` buffer, 1-D position tables have 512 rows, global-token position tables are learned);
* a modality embedding shared between encoder and decoder (4M-7) is stored once, under the first of
  its names in sorted order (``decoder_embeddings.<m>.mod_emb``), and the safetensors header
  metadata maps each dropped name to the kept one (``{"format": "pt", "<dropped>": "<kept>"}``),
  which is what ``safetensors.torch.save_model`` does and ``load_model(strict=True)`` expects;
* ``config.json`` is ``json.dumps(config, sort_keys=True, indent=2)``; compact files load as well.

Training checkpoints committed to the artifact store use the same tensors and metadata
(``data.safetensors`` + ``data.config.json``), so they also load here and in the reference.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import load_file, save_file

from .config import FourMConfig
from .fourm import FourM

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# a training checkpoint committed to the artifact store
STORE_CONFIG_NAME, STORE_WEIGHTS_NAME = "data.config.json", "data.safetensors"


# ------------------------------------------------------------------------------------ writing


def tied_layout(names: Iterable[str], tied: Mapping[str, str]) -> tuple[set[str], dict[str, str]]:
    """Which state-dict names a released-format file leaves out, and its header metadata.

    ``tied`` maps each name of a tied pair to its twin (``FourM.tied_parameter_names``). Each pair is
    stored once under its first name in sorted order; the metadata records ``dropped -> kept``."""
    names = set(names)
    metadata, dropped = {"format": "pt"}, set()
    for a, b in tied.items():
        kept, other = sorted((a, b))
        if kept in names:
            metadata[other] = kept
            dropped.add(other)
    return dropped, metadata


def reference_state(state: Mapping[str, torch.Tensor], tied: Mapping[str, str]) -> tuple[dict[str, torch.Tensor],
                                                                                        dict[str, str]]:
    """The tensors and header metadata of a released-format file (see :func:`tied_layout`).

    Tensors are detached, moved to the CPU, made contiguous and cloned (views of one storage cannot be
    written by safetensors)."""
    dropped, metadata = tied_layout(state, tied)
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items() if k not in dropped}, metadata


def save_pretrained(model: FourM, directory: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` in the released format (module docstring)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state, metadata = reference_state(model.state_dict(), model.tied_parameter_names())
    save_file(state, str(directory / WEIGHTS_NAME), metadata=metadata)
    (directory / CONFIG_NAME).write_text(model.config.to_json())
    return directory


# ------------------------------------------------------------------------------------ reading


def safetensors_metadata(raw: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file given its bytes (or at least its header)."""
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]).get("__metadata__") or {}


def load_state(model: FourM, state: dict[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> None:
    """Load ``state`` into ``model`` with ``strict=True``.

    A tied tensor stored once is given back its other name(s): first from the file's metadata aliases
    (``dropped -> kept``), then from the model's own ties (files that store only one of the pair)."""
    for dropped, kept in (metadata or {}).items():
        if dropped != "format" and dropped not in state and kept in state:
            state[dropped] = state[kept]
    for a, b in model.tied_parameter_names().items():
        if a not in state and b in state:
            state[a] = state[b]
        if b not in state and a in state:
            state[b] = state[a]
    model.load_state_dict(state, strict=True)


def model_from_bytes(config: bytes | str, weights: bytes, source: str = "checkpoint",
                     map_location: str | torch.device = "cpu") -> FourM:
    """Build the model of a ``config.json`` and load its safetensors bytes strictly."""
    cfg = FourMConfig.from_json(config, source=f"{source} config")
    model = FourM(cfg)
    state = load_safetensors_bytes(weights)
    load_state(model, state, safetensors_metadata(weights))
    return model.to(map_location)


def local_dir(source: str, storage_options: dict | None = None) -> Path:
    """Resolve ``source`` to a local directory holding the config and weights."""
    if os.path.isdir(source):
        return Path(source)
    if "://" in source:  # s3:// or any fsspec URL: copy the two files to a temporary folder
        import fsspec

        fs, path = fsspec.core.url_to_fs(source, **(storage_options or {}))
        path = path.rstrip("/")
        tmp = Path(tempfile.mkdtemp(prefix="fourm-"))
        names = (CONFIG_NAME, WEIGHTS_NAME)
        if not fs.exists(f"{path}/{WEIGHTS_NAME}") and fs.exists(f"{path}/{STORE_WEIGHTS_NAME}"):
            names = (STORE_CONFIG_NAME, STORE_WEIGHTS_NAME)
        for name in names:
            if not fs.exists(f"{path}/{name}"):
                raise FileNotFoundError(f"{source}: no {name}; a 4M checkpoint folder holds {CONFIG_NAME} and "
                                        f"{WEIGHTS_NAME} (as save_pretrained writes them)")
            fs.get(f"{path}/{name}", str(tmp / name))
        return tmp
    if source.startswith((".", "/", "~")) or source.count("/") != 1:  # hub ids are "org/name"
        raise FileNotFoundError(f"{source!r} is not a directory; give a local folder, an s3:// prefix or a hub id "
                                "such as EPFL-VILAB/4M-21_B")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME]))


def from_pretrained(source: str | Path, map_location: str | torch.device = "cpu",
                    storage_options: dict | None = None) -> FourM:
    """Build the model described by ``config.json`` and load ``model.safetensors`` with strict=True.

    ``source``: a local folder, an fsspec URL (``s3://bucket/prefix``) or a hub id
    (``EPFL-VILAB/4M-21_B``). A folder of a committed training checkpoint (``data.config.json`` +
    ``data.safetensors``) loads too. ``storage_options`` go to fsspec (S3 endpoint, credentials)."""
    directory = local_dir(str(source), storage_options)
    config_name, weights_name = CONFIG_NAME, WEIGHTS_NAME
    if not (directory / WEIGHTS_NAME).exists() and (directory / STORE_WEIGHTS_NAME).exists():
        config_name, weights_name = STORE_CONFIG_NAME, STORE_WEIGHTS_NAME
    for name in (config_name, weights_name):
        if not (directory / name).exists():
            raise FileNotFoundError(f"{source}: no {name}; a 4M checkpoint folder holds {CONFIG_NAME} and "
                                    f"{WEIGHTS_NAME} (as save_pretrained writes them)")
    config = FourMConfig.from_json_file(directory / config_name)
    model = FourM(config)
    path = directory / weights_name
    with open(path, "rb") as f:
        header = f.read(8)
        header += f.read(struct.unpack("<Q", header)[0])
    load_state(model, load_file(str(path), device=str(map_location)), safetensors_metadata(header))
    return model.to(map_location)
