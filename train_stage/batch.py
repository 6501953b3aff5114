"""The masked batch: what the masking produces and the model consumes.

Every tensor has a static shape: ``N_in`` encoder and ``N_out`` decoder slots per sample, with a
``valid`` flag for padding. Tokens of all modalities are laid out flat; ``*_modality`` holds each
slot's index in the modality registry (``MODALITY_INDEX``; -1 for padding) and ``*_positions`` the
index into that modality's position table (grid cell for image-like modalities, rank among the kept
tokens for sequences, §9).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Callable

import torch

from fourm_core.modalities import MODALITIES

MODALITY_NAMES: tuple[str, ...] = tuple(MODALITIES)
MODALITY_INDEX: dict[str, int] = {n: i for i, n in enumerate(MODALITY_NAMES)}
IGNORE = -100  # label of decoder slots without a loss


@dataclass
class MaskedBatch:
    """A batch of masked samples.

    enc_tokens (B, N_in) int64: token id; for pixel / embedding modalities the row in ``pixels`` /
        ``embeddings`` of that modality.
    enc_positions, enc_modality (B, N_in) int64; enc_valid (B, N_in) bool.
    dec_tokens (B, N_out) int64: decoder input id (sequences: teacher forcing; image-like: unused,
        the slot is decoded from the mask token); dec_labels (B, N_out) int64 with IGNORE for no loss.
    dec_positions, dec_modality (B, N_out) int64; dec_valid (B, N_out) bool.
    pixels: modality -> (B, n_patches, C*P*P) patchified pixels; embeddings: modality -> (B, L, F).
    """

    enc_tokens: torch.Tensor
    enc_positions: torch.Tensor
    enc_modality: torch.Tensor
    enc_valid: torch.Tensor
    dec_tokens: torch.Tensor
    dec_positions: torch.Tensor
    dec_modality: torch.Tensor
    dec_valid: torch.Tensor
    dec_labels: torch.Tensor
    pixels: dict[str, torch.Tensor] = field(default_factory=dict)
    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.enc_tokens.shape[0]

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "MaskedBatch":
        """A new batch with ``fn`` applied to every tensor (including those in ``pixels`` / ``embeddings``)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = {k: fn(t) for k, t in v.items()} if isinstance(v, dict) else fn(v)
        return MaskedBatch(**out)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "MaskedBatch":
        return self.map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "MaskedBatch":
        """Page-locked copy; ``DataLoader(pin_memory=True)`` calls this, so ``to(cuda, non_blocking=True)``
        is a true asynchronous copy and the host goes on preparing the step instead of waiting for it."""
        return self.map(torch.Tensor.pin_memory)

    def n_tokens(self) -> int:
        """Encoder + decoder tokens that carry information (the unit of the §6 token schedule)."""
        return int(self.enc_valid.sum()) + int(self.dec_valid.sum())
