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


def reference_like_raw_batch(modalities: list[str], batch_size: int, generator: torch.Generator | None = None
                             ) -> RawBatch:
    """Samples with the sizes of the reference's masking-statistics generator (``tests/fixtures/ml4m``):
    captions of 3-39 words, 0-11 boxes, 1-21 metadata fields, a palette of 1-7 colours, 0-2 persons, 1-9 SAM
    instances, 3-39 T5 rows; image-like modalities full. Real data's sequence lengths, unlike
    :func:`random_raw_batch`, whose sequences are uniform up to ``max_tokens`` (a 290-token SAM list per image).
    """
    g = generator or torch.Generator().manual_seed(0)
    B = batch_size
    raw = RawBatch(dataset=torch.zeros(B, dtype=torch.long))

    def seq(name: str, length: torch.Tensor) -> None:
        L = get_modality(name).max_tokens
        raw.tokens[name] = torch.randint(300, 4000, (B, L), generator=g, dtype=torch.int32)
        raw.lengths[name] = length.clamp(max=L)
        raw.present[name] = torch.ones(B, dtype=torch.bool)

    def randint(lo: int, hi: int) -> torch.Tensor:
        return torch.randint(lo, hi + 1, (B,), generator=g)

    for name in modalities:
        mod = get_modality(name)
        if mod.kind == ModalityKind.PIXELS:
            raw.pixels[name] = torch.zeros(B, mod.max_tokens, 1)
            raw.lengths[name] = torch.full((B,), mod.max_tokens)
        elif mod.kind == ModalityKind.EMBEDDING_SEQ:
            raw.embeddings[name] = torch.zeros(B, mod.max_tokens, 1)
            raw.lengths[name] = randint(3, 39)
        elif name == "caption":
            seq(name, randint(3, 39) + 1)
        elif name == "det":
            seq(name, 5 * randint(0, 11))
        elif name == "metadata":
            seq(name, 2 * randint(1, 21))
        elif name == "color_palette":
            seq(name, 1 + 3 * randint(1, 7))
        elif name == "human_poses":
            seq(name, (39 * randint(0, 2)).clamp(min=1))
        elif name == "sam_instance":
            seq(name, 28 + 21 * randint(0, 8))
        else:
            raw.tokens[name] = torch.randint(0, mod.vocab_size, (B, mod.max_tokens), generator=g, dtype=torch.int32)
            raw.lengths[name] = torch.full((B,), mod.max_tokens)
    return raw


__all__ = ["random_raw_batch", "reference_like_raw_batch", "EOS"]
