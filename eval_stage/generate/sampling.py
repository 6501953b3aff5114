"""Turning logits into tokens: temperature, top-k, top-p (nucleus), seeded Gumbel-max sampling."""

from __future__ import annotations

import torch


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """(..., V) -> (..., V) with the excluded entries at -inf.

    top_k keeps the k largest logits; top_p keeps the smallest set of most likely tokens whose
    probability mass reaches p (the most likely token is always kept)."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        mass_before = probs.cumsum(-1) - probs  # mass of strictly more likely tokens
        drop_sorted = mass_before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample(logits: torch.Tensor, temperature: float, generator: torch.Generator, top_k: int | None = None,
           top_p: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., V) logits -> tokens (...) int64 and their confidence (...).

    Gumbel-max: argmax(logits/τ + G) with G ~ Gumbel(0, 1) drawn from ``generator``; τ = 0 is greedy.
    The noise has the full (..., V) shape, so a draw depends only on the generator state and shape.
    The confidence (MaskGIT's ranking key) is the token's probability under softmax(logits/τ) before
    top-k/top-p (softmax(logits) for τ = 0): filtering would give every survivor of top_k=1 the same
    confidence 1 and lose the ranking.
    """
    logits = logits.float()
    if temperature <= 0:
        tok = filter_logits(logits, top_k, top_p).argmax(-1)
        return tok, logits.softmax(-1).gather(-1, tok[..., None])[..., 0]
    scaled = logits / temperature
    filtered = filter_logits(scaled, top_k, top_p)
    # drawn on the generator's device (CPU) and moved, so a seed gives the same draws on any device
    u = torch.rand(filtered.shape, generator=generator).to(filtered.device).clamp_(1e-20, 1.0)
    tok = (filtered - torch.log(-torch.log(u))).argmax(-1)
    return tok, scaled.softmax(-1).gather(-1, tok[..., None])[..., 0]
