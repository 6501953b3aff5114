"""Random unmasked batches with realistic shapes, for tests and benchmarks."""

from __future__ import annotations

import torch

from fourm_core.modalities import ModalityKind, get_modality

from .masking import EOS, RawBatch


def random_raw_batch(modalities: list[str], batch_size: int, generator: torch.Generator | None = None,
                     full_sequences: bool = False, t5_dim: int | None = None) -> RawBatch:
    """Every modality present; sequences of random length (full length if ``full_sequences``).

    Sequence ids avoid the special and sentinel ids (they start at 204, the value tokens).
    """
    g = generator or torch.Generator().manual_seed(0)
    raw = RawBatch()
    B = batch_size
    for name in modalities:
        mod = get_modality(name)
        L = mod.max_tokens
        if mod.kind == ModalityKind.PIXELS:
            P = mod.patch_size
            raw.pixels[name] = torch.randn(B, L, mod.feature_dim * P * P, generator=g)
            raw.lengths[name] = torch.full((B,), L)
        elif mod.kind == ModalityKind.EMBEDDING_SEQ:
            raw.embeddings[name] = torch.randn(B, L, t5_dim or mod.feature_dim, generator=g)
            raw.lengths[name] = torch.full((B,), L) if full_sequences else torch.randint(1, L + 1, (B,), generator=g)
        elif mod.kind == ModalityKind.SEQUENCE:
            raw.tokens[name] = torch.randint(204, mod.vocab_size, (B, L), generator=g)
            raw.lengths[name] = torch.full((B,), L) if full_sequences else torch.randint(1, L + 1, (B,), generator=g)
        else:
            raw.tokens[name] = torch.randint(0, mod.vocab_size, (B, L), generator=g)
            raw.lengths[name] = torch.full((B,), L)
    raw.dataset = torch.zeros(B, dtype=torch.long)
    return raw


__all__ = ["random_raw_batch", "EOS"]
