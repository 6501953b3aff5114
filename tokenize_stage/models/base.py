"""The interface every tokenizer shares, and its one loading path (local dir | s3:// | hub id).

A tokenizer maps *normalised* tensors to discrete tokens and back:

    tokens = tok.encode(x)        # x: (B, C, H, W) or (B, D) float (semseg: (B, H, W) int64) -> (B, N) int64
    x_hat  = tok.decode(tokens)   # (B, N) int64 -> reconstruction in the same space as x
    loss, logs = tok.training_loss(x)

Raw pseudo labels go through ``tokenize_stage.normalize`` first (RGB to [-1, 1], robust-standardised
depth, ...). Weights are safetensors, configs JSON; nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from fourm_core.checkpoints import read_state_dict

from .config import parse_config

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
# A tokenizer committed to the artifact store (train_tokenizer) has its files as data.<suffix>.
STORE_WEIGHTS_NAME = "data.safetensors"
STORE_CONFIG_NAME = "data.config.json"


class Tokenizer(nn.Module):
    """Base class: holds ``config``; subclasses implement encode/decode/training_loss."""

    config: Any

    @property
    def n_tokens(self) -> int:
        return self.config.n_tokens

    @property
    def vocab_size(self) -> int:
        return self.config.codebook_size

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, tokens: torch.Tensor, **kwargs: Any) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:  # pragma: no cover
        raise NotImplementedError

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """decode(encode(x)): the tokenizer bound's reconstruction."""
        return self.decode(self.encode(x), **kwargs)

    # ------------------------------------------------------------------------------------ save / load

    def config_dict(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json")

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``model.safetensors`` + ``config.json`` into ``directory``; returns the directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(self.state_dict_for_save(), str(directory / WEIGHTS_NAME))
        (directory / CONFIG_NAME).write_text(json.dumps(self.config_dict(), indent=2))
        return directory

    def state_dict_for_save(self) -> dict[str, torch.Tensor]:
        # safetensors refuses shared storage; contiguous clones are cheap at save time.
        return {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()}

    def weights_bytes(self) -> bytes:
        from safetensors.torch import save

        return save(self.state_dict_for_save())

    def weights_digest(self) -> str:
        return hashlib.sha256(self.weights_bytes()).hexdigest()

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, tokenizer: str | None = None,
                        **storage_options: Any) -> "Tokenizer":
        """Load from a local directory, an fsspec URL (``s3://bucket/dir``) or a Hugging Face hub id.

        Calling it on the base class builds whichever architecture ``config.json`` names. A directory in
        apple/ml-4m's released format (``config.json`` with ``enc_type``..., or an ``<id>.pth`` checkpoint)
        loads into our ml4m layout through ``models.ml4m``; ``tokenizer`` names ours when the files alone
        cannot tell (otherwise it is guessed from the config and the source's name).
        """
        directory = _resolve(str(source), storage_options)
        config, state = _read(directory, str(source), tokenizer)
        model = build_tokenizer(config)
        if cls is not Tokenizer and not isinstance(model, cls):
            raise TypeError(f"{source} holds a {type(model).__name__}, not a {cls.__name__}")
        model.load_state_dict(state, strict=True)
        return model.eval()


def _read(directory: str, source: str, tokenizer: str | None) -> tuple[Any, dict[str, torch.Tensor]]:
    """(typed config, state dict in our names) from a resolved directory, in any supported layout."""
    from . import ml4m

    pth = sorted(f for f in os.listdir(directory) if f.endswith(".pth"))
    has_config = os.path.exists(os.path.join(directory, CONFIG_NAME))
    if pth and not has_config:  # the older release layout: <id>.pth with ckpt['model'] + ckpt['args']
        raw_cfg, raw_sd = ml4m._load_pth(os.path.join(directory, pth[0]))
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
    if config.architecture == "vqvae":
        from .vqvae import VQVAE

        return VQVAE(config)
    if config.architecture == "diffusion_vq":
        from .diffusion import DiffusionVQ

        return DiffusionVQ(config)
    if config.architecture == "mlp_memcodes":
        from .mlp import MLPMemcodes

        return MLPMemcodes(config)
    raise ValueError(f"unknown tokenizer architecture {config.architecture!r}")


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
