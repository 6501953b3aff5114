"""The tokenizer architectures by name, and the one loading path (local dir | s3:// | hub id).

    tok = from_pretrained("path/or/s3://bucket/dir/or/hub-org/name")   # any architecture, from its config
    vq = from_pretrained(path, expect=VQVAE)                          # refuses a folder holding another one
    model = build_tokenizer(tokenizer_config("semseg_vqvae", "tiny"))   # randomly initialised

The architectures subclass :class:`~tokenize_stage.models.base.Tokenizer`; this module, not the base class,
knows them all (the base class imports none of its subclasses). Weights are safetensors, configs JSON;
nothing is ever unpickled except through ``models.ml4m``'s ``weights_only`` loader of the reference's
older ``.pth`` layout.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, TypeVar

import torch

from fourm_core.checkpoints import read_state_dict

from . import ml4m
from .base import CONFIG_NAME, STORE_CONFIG_NAME, STORE_WEIGHTS_NAME, WEIGHTS_NAME, Tokenizer
from .config import parse_config
from .diffusion import DiffusionVQ
from .mlp import MLPMemcodes
from .vqvae import VQVAE

# config.architecture -> the class that builds it
ARCHITECTURES: dict[str, type[Tokenizer]] = {"vqvae": VQVAE, "diffusion_vq": DiffusionVQ, "mlp_memcodes": MLPMemcodes}
T = TypeVar("T", bound=Tokenizer)


def from_pretrained(source: str | os.PathLike, tokenizer: str | None = None, *, expect: type[T] = Tokenizer,
                    **storage_options: Any) -> T:
    """Load from a local directory, an fsspec URL (``s3://bucket/dir``) or a Hugging Face hub id.

    Builds whichever architecture ``config.json`` names; ``expect`` (a Tokenizer subclass) refuses any other
    with a TypeError. A directory in apple/ml-4m's released format (``config.json`` with ``enc_type``..., or
    an ``<id>.pth`` checkpoint) loads into our ml4m layout through ``models.ml4m``; ``tokenizer`` names ours
    when the files alone cannot tell (otherwise it is guessed from the config and the source's name).
    """
    directory = _resolve(str(source), storage_options)
    config, state = _read(directory, str(source), tokenizer)
    model = build_tokenizer(config)
    if not isinstance(model, expect):
        raise TypeError(f"{source} holds a {type(model).__name__}, not a {expect.__name__}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def _read(directory: str, source: str, tokenizer: str | None) -> tuple[Any, dict[str, torch.Tensor]]:
    """(typed config, state dict in our names) from a resolved directory, in any supported layout."""
    pth = sorted(f for f in os.listdir(directory) if f.endswith(".pth"))
    has_config = os.path.exists(os.path.join(directory, CONFIG_NAME))
    if pth and not has_config:  # the older release layout: <id>.pth with ckpt['model'] + ckpt['args']
        raw_cfg, raw_sd = ml4m.load_pth(os.path.join(directory, pth[0]))
        hint = f"{source} {pth[0]}"
    else:
        config_path, weights_path = _files_in(directory)
        raw_cfg = json.loads(Path(config_path).read_text())
        if not ml4m.is_ml4m_config(raw_cfg):
            return parse_config(raw_cfg), read_state_dict(weights_path)
        raw_sd, hint = read_state_dict(weights_path), source
    shapes = {k: tuple(v.shape) for k, v in raw_sd.items()}
    config = ml4m.config_from_ml4m(raw_cfg, shapes, tokenizer=tokenizer, hint=hint)
    return config, ml4m.state_dict_from_ml4m(raw_sd, config)


def build_tokenizer(config: Any) -> Tokenizer:
    """A randomly initialised tokenizer for a typed config (dispatch on ``config.architecture``)."""
    if config.architecture not in ARCHITECTURES:
        raise ValueError(f"unknown tokenizer architecture {config.architecture!r}")
    return ARCHITECTURES[config.architecture](config)


def source_digest(source: str | os.PathLike, **storage_options: Any) -> tuple[str, str]:
    """(local directory, sha256 over the weight and config files) of a tokenizer source in any supported
    layout: what a unit that uses released weights keys its cache on."""
    directory = _resolve(str(source), storage_options)
    names = sorted(f for f in os.listdir(directory)
                   if f in (CONFIG_NAME, WEIGHTS_NAME, STORE_CONFIG_NAME, STORE_WEIGHTS_NAME) or f.endswith(".pth"))
    if not names:
        raise FileNotFoundError(f"{source} holds no tokenizer files ({CONFIG_NAME} + {WEIGHTS_NAME} or <id>.pth)")
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode())
        h.update(Path(directory, name).read_bytes())
    return directory, h.hexdigest()


def _files_in(directory: str) -> tuple[str, str]:
    for cfg, w in ((CONFIG_NAME, WEIGHTS_NAME), (STORE_CONFIG_NAME, STORE_WEIGHTS_NAME)):
        if os.path.exists(os.path.join(directory, cfg)) and os.path.exists(os.path.join(directory, w)):
            return os.path.join(directory, cfg), os.path.join(directory, w)
    raise FileNotFoundError(f"{directory} has no {CONFIG_NAME} + {WEIGHTS_NAME} (nor a committed tokenizer's "
                            f"{STORE_CONFIG_NAME} + {STORE_WEIGHTS_NAME})")


def _resolve(source: str, storage_options: dict[str, Any]) -> str:
    """A local directory holding the tokenizer's files, fetching remote ones first."""
    if os.path.isdir(source):
        return source
    if "://" in source:
        import fsspec

        fs, path = fsspec.core.url_to_fs(source, **storage_options)
        local = tempfile.mkdtemp(prefix="fourm-tokenizer-")
        for name in (CONFIG_NAME, WEIGHTS_NAME, STORE_CONFIG_NAME, STORE_WEIGHTS_NAME):
            remote = f"{path.rstrip('/')}/{name}"
            if fs.exists(remote):
                fs.get_file(remote, os.path.join(local, name))
        for remote in fs.glob(f"{path.rstrip('/')}/*.pth"):  # the reference's older <id>.pth layout
            fs.get_file(remote, os.path.join(local, remote.rsplit("/", 1)[-1]))
        return local
    if source.count("/") == 1 and not source.startswith((".", "/")):
        from huggingface_hub import snapshot_download  # honours HF_HUB_OFFLINE and the local cache

        return snapshot_download(source, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, "*.pth"])
    raise FileNotFoundError(f"tokenizer source {source!r} is not a directory, an fsspec URL or a hub id")
