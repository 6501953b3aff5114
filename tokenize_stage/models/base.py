"""The interface every tokenizer shares, and its one loading path (local dir | s3:// | hub id).

A tokenizer maps *normalised* tensors to discrete tokens and back:

    tokens = tok.encode(x)        # x: (B, C, H, W) or (B, D) float (semseg: (B, H, W) int64) -> (B, N) int64
    x_hat  = tok.decode(tokens)   # (B, N) int64 -> reconstruction in the same space as x
    loss, logs = tok.training_loss(x)

Raw pseudo labels go through ``tokenize_stage.normalize`` first (RGB to [-1, 1], robust-standardised
depth, ...). Weights are safetensors, configs JSON; nothing is ever unpickled. Loading any architecture
(``from_pretrained``) and building one from its config (``build_tokenizer``) live in ``models.hub``, which
knows the subclasses; this module knows none of them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

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

    # ----------------------------------------------------------------------------------------- save

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
