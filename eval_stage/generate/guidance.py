"""Classifier-free guidance over one or several conditions, with all passes in one batched forward.

A guided step runs P = 1 + C passes stacked along the batch axis: pass 0 is unconditional (every
conditioning input dropped), pass c is conditioned on the c-th condition's inputs only. With
logits ℓ_u and ℓ_c and weights w_c the guided logits are

    ℓ = ℓ_u + Σ_c w_c (ℓ_c − ℓ_u)

so for one condition with scale s: s = 1 gives the conditional logits, s = 0 the unconditional
ones, s > 1 extrapolates away from the unconditional prediction. What a target step has already
decoded of its own modality is kept in every pass (it is the state being completed, not a condition).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .adapter import EncoderSlots


@dataclass(frozen=True)
class Condition:
    """A set of input modalities and its guidance weight."""

    modalities: tuple[str, ...]
    weight: float


def guided_slots(slots: EncoderSlots, conditions: list[Condition], keep_always: tuple[str, ...]) -> EncoderSlots:
    """(B, N) slots -> (P·B, N): pass 0 keeps only ``keep_always``, pass c also keeps condition c."""
    B = slots.tokens.shape[0]
    out = slots.repeat(1 + len(conditions))
    passes = [set(keep_always)] + [set(keep_always) | set(c.modalities) for c in conditions]
    keep_group = torch.zeros(len(passes), len(slots.names), dtype=torch.bool)
    for p, names in enumerate(passes):
        for g, name in enumerate(slots.names):
            keep_group[p, g] = name in names
    device = out.group.device
    pass_of_row = torch.arange(len(passes), device=device).repeat_interleave(B)  # (P*B,)
    keep = keep_group.to(device)[pass_of_row[:, None], out.group]  # (P*B, N)
    out.valid = out.valid & keep
    return out


def combine(logits: torch.Tensor, conditions: list[Condition]) -> torch.Tensor:
    """(P·B, ...) logits of the stacked passes -> (B, ...) guided logits."""
    P = 1 + len(conditions)
    parts = logits.float().unflatten(0, (P, -1))
    out = parts[0].clone()
    for c, cond in enumerate(conditions, start=1):
        out = out + cond.weight * (parts[c] - parts[0])
    return out
