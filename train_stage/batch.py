"""The masked batch: what the masking produces and the model consumes.

Every tensor has a static shape: ``N_in`` encoder and ``N_out`` decoder slots per sample, with a
``valid`` flag for padding. Tokens of all modalities are laid out flat; ``*_modality`` holds each
slot's index in the modality registry (``MODALITY_INDEX``; -1 for padding) and ``*_positions`` the
index into that modality's position table (grid cell for image-like modalities, rank among the kept
tokens for sequences, §9).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
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
    # The slot index (``with_slot_index``): each side's flat slot numbers grouped by modality, and the group
    # sizes. The sizes stay on the host (``to`` keeps them there), so the model cuts each modality's slots out
    # of the device tensors without asking the GPU how many there are: a boolean-mask selection does ask,
    # and every such question stops the host until the GPU has caught up (354 per 4M-21 B step before).
    enc_order: torch.Tensor | None = None  # (B * N_in,) int64
    dec_order: torch.Tensor | None = None  # (B * N_out,) int64
    loss_order: torch.Tensor | None = None  # (B * N_out,) int64: decoder slots with a label
    slot_counts: torch.Tensor | None = None  # (3, M + 1) int64 on the host: enc / dec / loss group sizes

    @property
    def batch_size(self) -> int:
        return self.enc_tokens.shape[0]

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor], moves_only: bool = False) -> "MaskedBatch":
        """A new batch with ``fn`` applied to every tensor (including those in ``pixels`` / ``embeddings``).

        ``moves_only``: ``fn`` only moves tensors (device, pinned memory), so the slot index still describes the
        batch: it is moved too, but ``slot_counts`` stays on the host. Otherwise (a slice, a cast) the index is
        dropped, and ``slots`` computes it from the new batch."""
        index = {"enc_order", "dec_order", "loss_order", "slot_counts"}
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in index:
                out[f.name] = (v if f.name == "slot_counts" or v is None else fn(v)) if moves_only else None
            elif v is not None:
                out[f.name] = {k: fn(t) for k, t in v.items()} if isinstance(v, dict) else fn(v)
            else:
                out[f.name] = v
        return MaskedBatch(**out)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "MaskedBatch":
        return self.map(lambda t: t.to(device, non_blocking=non_blocking), moves_only=True)

    def side_modality(self, side: str) -> torch.Tensor:
        """(B, N) modality index of each slot on ``side`` ("enc", "dec", or "loss": -1 where a decoder slot has
        no label)."""
        if side == "loss":
            return torch.where(self.dec_labels == IGNORE, -1, self.dec_modality)
        return self.enc_modality if side == "enc" else self.dec_modality

    def with_slot_index(self) -> "MaskedBatch":
        """This batch with its slot index (computed where the batch is: the masker calls it on the CPU)."""
        sides = [slot_index(self.side_modality(s)) for s in ("enc", "dec", "loss")]
        return replace(self, enc_order=sides[0][0], dec_order=sides[1][0], loss_order=sides[2][0],
                       slot_counts=torch.stack([c for _, c in sides]).cpu())

    def slots(self, side: str) -> dict[int, torch.Tensor]:
        """modality index -> the flat slot numbers (into B * N) of that modality on ``side`` ("enc", "dec", or
        "loss": decoder slots with a label), in slot order, as a boolean mask's ``nonzero`` lists them. From the
        slot index when the batch has one; else computed here, on every call (one host-device round trip per
        side on a GPU)."""
        row = ("enc", "dec", "loss").index(side)
        if self.slot_counts is None:
            order, counts = slot_index(self.side_modality(side))
        else:
            order, counts = getattr(self, f"{side}_order"), self.slot_counts[row]
        sizes = counts.tolist()  # on the host: no sync
        slots_now = (self.enc_modality if side == "enc" else self.dec_modality).numel()
        if order.numel() != slots_now or sum(sizes) != slots_now:
            raise ValueError(f"the batch's {side} slot index describes {order.numel()} slots, the batch has "
                             f"{slots_now}: a batch changed after masking needs .with_slot_index() again")
        groups = order.split(sizes)
        return {i: groups[i + 1] for i in range(len(MODALITY_NAMES))}

    def pin_memory(self) -> "MaskedBatch":
        """Page-locked copy; ``DataLoader(pin_memory=True)`` calls this, so ``to(cuda, non_blocking=True)``
        is a true asynchronous copy and the host goes on preparing the step instead of waiting for it."""
        return self.map(torch.Tensor.pin_memory, moves_only=True)

    def n_tokens(self) -> int:
        """Encoder + decoder tokens that carry information (the unit of the §6 token schedule)."""
        return int(self.enc_valid.sum()) + int(self.dec_valid.sum())


def slot_index(modality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) modality indices (-1: padding) -> (order (B * N,), counts (M + 1,)): the flat slot numbers sorted
    by modality, each modality's in slot order (a stable sort), and the group sizes: group 0 is the padding,
    group i + 1 modality i."""
    flat = modality.reshape(-1) + 1
    return torch.argsort(flat, stable=True), torch.bincount(flat, minlength=len(MODALITY_NAMES) + 1)
