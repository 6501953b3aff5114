"""Tiny models built concurrently from threads (Prefect runs tasks in threads) get identical weights."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

from fourm_core.seeding import seeded


def _build() -> torch.Tensor:
    with seeded(0):
        layers = [torch.nn.Linear(64, 64) for _ in range(20)]  # many draws: interleaving would show
    return torch.cat([layer.weight.flatten() for layer in layers])


def test_concurrent_seeded_builds_are_identical():
    reference = _build()
    with ThreadPoolExecutor(8) as pool:
        builds = list(pool.map(lambda _: _build(), range(16)))
    assert all(torch.equal(b, reference) for b in builds)


def test_seeded_leaves_the_callers_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with seeded(0):
        torch.rand(100)
    assert torch.equal(torch.rand(3), expected)
