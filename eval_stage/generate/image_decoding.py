"""Parallel decoding of image-like token targets: MaskGIT and random order (ROAR) (4M-FACTS §7).

Both start from the target's known tokens (``-1`` = unknown) and fill the unknown positions over S
steps with counts from the token schedule. Each step re-encodes the inputs together with every
target token decoded so far (4M feeds decoded tokens back through the encoder) and decodes queries
made of the mask token at target positions.

* MaskGIT queries every unknown position, samples a token for each, and keeps the k_s most confident
  ones (confidence = probability of the sampled token under softmax(logits/τ), before top-k/top-p).
* ROAR fixes one random order of the unknown positions up front and decodes the next k_s positions
  of that order at each step; only those positions are queried.
"""

from __future__ import annotations

import torch

from fourm_core.modalities import get_modality

from .adapter import ModelAdapter
from .guidance import Condition, combine, guided_slots
from .inputs import UNKNOWN, build_slots
from .sampling import sample
from .schedules import temperature_at, tokens_per_step


def decode_image_tokens(adapter: ModelAdapter, state: dict[str, torch.Tensor], modality: str, batch_size: int,
                        generator: torch.Generator, method: str = "maskgit", steps: int = 8,
                        token_schedule: str = "cosine", temperature: float = 1.0, temperature_end: float | None = None,
                        temperature_schedule: str = "constant", top_k: int | None = None, top_p: float | None = None,
                        conditions: list[Condition] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """-> tokens (B, L) with every position known, and fill_step (B, L): the step that filled each
    position (-1 for positions that were given)."""
    mod = get_modality(modality)
    B, L, device = batch_size, mod.max_tokens, adapter.device
    cur = state.get(modality)
    cur = torch.full((B, L), UNKNOWN, dtype=torch.long, device=device) if cur is None else cur.to(device).long().clone()
    unknown = cur == UNKNOWN
    fill_step = torch.full((B, L), -1, dtype=torch.long, device=device)
    counts = tokens_per_step(unknown.sum(1).cpu(), steps, token_schedule).to(device)  # (B, S)
    if method == "roar":
        # one random order of the unknown positions per sample; known positions sort last
        noise = torch.rand(B, L, generator=generator).to(device).masked_fill(~unknown, 2.0)
        order = noise.argsort(1)  # (B, L): order[:, j] is the j-th position to decode
        done = torch.zeros(B, dtype=torch.long, device=device)
    elif method != "maskgit":
        raise ValueError(f"unknown image decoding {method!r}; use 'maskgit' or 'roar'")
    P = 1 + len(conditions) if conditions else 1
    for s in range(steps):
        k = counts[:, s]
        if int(k.sum()) == 0:
            continue
        step_state = {**state, modality: cur}
        slots = build_slots(adapter, step_state, B)
        if conditions:  # the target's own decoded tokens are kept in every guidance pass
            slots = guided_slots(slots, conditions, keep_always=(modality,))
        ctx = adapter.encode(slots)
        if method == "maskgit":
            positions = torch.arange(L, device=device).expand(B, L)
            qvalid = cur == UNKNOWN
        else:
            Q = int(k.max())
            j = done[:, None] + torch.arange(Q, device=device)[None]  # (B, Q) indices into the order
            positions = order.gather(1, j.clamp(max=L - 1))
            qvalid = torch.arange(Q, device=device)[None] < k[:, None]
        rep = lambda t: t.repeat(P, 1)  # noqa: E731
        logits = adapter.decode(ctx, modality, rep(torch.zeros_like(positions)), rep(positions), rep(qvalid))
        logits = combine(logits, conditions) if conditions else logits.float()
        temp = temperature_at(s, steps, temperature, temperature_end, temperature_schedule)
        tok, prob = sample(logits, temp, generator, top_k, top_p)  # (B, Q)
        if method == "maskgit":
            conf = prob.masked_fill(~qvalid, -1.0)
            rank = conf.argsort(dim=1, descending=True, stable=True).argsort(dim=1)
            chosen = qvalid & (rank < k[:, None])
        else:
            chosen = qvalid
            done = done + k
        # scatter the chosen tokens; the other query slots (padding may repeat a position) go to a spare
        # column L that is cut off, so no position is written twice
        dest = torch.where(chosen, positions, L)
        cur = _scatter(cur, dest, tok)
        fill_step = _scatter(fill_step, dest, torch.full_like(tok, s))
    assert not bool((cur == UNKNOWN).any()), "a target position was left unfilled"
    return cur, fill_step


def _scatter(grid: torch.Tensor, dest: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """grid (B, L), dest (B, Q) in [0, L] (L = discard), values (B, Q) -> updated copy of grid."""
    B, L = grid.shape
    wide = torch.cat([grid, grid.new_zeros(B, 1)], 1).scatter(1, dest, values.to(grid.dtype))
    return wide[:, :L]
