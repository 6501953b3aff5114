"""Token-count and temperature schedules of the parallel samplers (4M-FACTS §7).

Token schedule: with N positions to fill in S steps, the fraction still masked after step i
(1-based) is cos(π/2 · i/S) ("cosine", MaskGIT) or 1 − i/S ("linear"); step i fills the difference,
at least one token, and the last step fills whatever is left, so the counts sum to N exactly.
Temperature schedule over steps i = 0..S−1 from τ_start to τ_end: "constant" (τ_start), "linear"
τ_start + (τ_end − τ_start)·i/(S−1), "cosine" τ_end + (τ_start − τ_end)·(1 + cos(π i/(S−1)))/2.
"""

from __future__ import annotations

import math

import torch


def tokens_per_step(n: torch.Tensor, steps: int, kind: str = "cosine") -> torch.Tensor:
    """n (B,) positions to fill per sample -> (B, steps) int64 counts per step, each row summing to n.

    A sample with fewer positions than steps fills one per step until done (then zeros)."""
    i = torch.arange(1, steps + 1, dtype=torch.float64)
    if kind == "cosine":
        remaining = torch.cos(math.pi / 2 * i / steps)
    elif kind == "linear":
        remaining = 1 - i / steps
    else:
        raise ValueError(f"unknown token schedule {kind!r}; use 'cosine' or 'linear'")
    remaining[-1] = 0.0
    nd = n.double()[:, None]
    left = torch.floor(nd * remaining[None]).long()  # masked after each step
    before = torch.cat([n[:, None].long(), left[:, :-1]], 1)
    count = (before - left).clamp(min=0)
    # at least one per step while anything is left: enforce by walking the cumulative sum
    done = torch.zeros_like(n, dtype=torch.long)
    out = torch.zeros_like(count)
    for s in range(steps):
        want = torch.maximum(count[:, s], torch.ones_like(done))
        if s == steps - 1:
            want = n.long() - done
        take = torch.minimum(want, n.long() - done)
        out[:, s] = take
        done = done + take
    return out


def temperature_at(step: int, steps: int, start: float, end: float | None = None, kind: str = "constant") -> float:
    """Temperature of step ``step`` (0-based) of ``steps``."""
    if kind == "constant" or end is None or steps <= 1:
        return start
    f = step / (steps - 1)
    if kind == "linear":
        return start + (end - start) * f
    if kind == "cosine":
        return end + (start - end) * (1 + math.cos(math.pi * f)) / 2
    raise ValueError(f"unknown temperature schedule {kind!r}; use 'constant', 'linear' or 'cosine'")
