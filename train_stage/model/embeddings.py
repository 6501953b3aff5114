"""Per-modality embeddings and output heads, by modality kind (4M-FACTS §6, §9 names).

Every embedding returns (x, emb) for the selected slots: ``x`` the content (token embedding, patch or
T5 projection) and ``emb`` position + modality embedding, kept apart because the decoder re-adds the
encoder's ``emb`` to the projected context.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fourm_core.modalities import Modality, ModalityKind

from .config import FourMConfig
from .posemb import sincos_1d, sincos_2d

_MAX_SINCOS_1D = 512  # 1-D tables: 512 rows, whatever the modality's max_tokens (§9)


def position_table(mod: Modality, cfg: FourMConfig) -> torch.Tensor:
    """(1, P, D) fixed sin-cos table of a modality: P = 512 for sequences, the grid size otherwise.

    The released checkpoints store every 1-D table with all 512 rows (their ``[:max_length]`` slice
    acts on the leading unit dimension), so ours has 512 rows too; positions stay < ``max_tokens``.
    """
    if mod.kind in (ModalityKind.SEQUENCE, ModalityKind.EMBEDDING_SEQ):
        if mod.max_tokens > _MAX_SINCOS_1D:
            raise ValueError(f"{mod.name}: max_tokens {mod.max_tokens} exceeds the {_MAX_SINCOS_1D} 1-D positions")
        return sincos_1d(_MAX_SINCOS_1D, cfg.dim)
    if mod.grid is not None:
        h, w = mod.grid
    else:  # global tokens: a small square grid (16 tokens -> 4x4)
        h = w = int(math.isqrt(mod.max_tokens))
        assert h * w == mod.max_tokens, mod.name
    return sincos_2d(h, w, cfg.dim)


class _PosModEmbedding(nn.Module):
    """``pos_emb`` (1, P, D) and ``mod_emb`` (1, 1, D).

    Global-token modalities (tok_dinov2_global, tok_imagebind_global) have a learned position table,
    as in the released models (a parameter, trained, with weight decay off); every other modality a
    fixed sin-cos buffer.
    """

    def __init__(self, mod: Modality, cfg: FourMConfig):
        super().__init__()
        if mod.kind == ModalityKind.GLOBAL_TOKENS:
            self.pos_emb = nn.Parameter(torch.zeros(1, mod.max_tokens, cfg.dim))
            nn.init.normal_(self.pos_emb, std=0.02)
        else:
            self.register_buffer("pos_emb", position_table(mod, cfg))
        self.mod_emb = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        nn.init.normal_(self.mod_emb, std=0.02)

    def pos_mod(self, positions: torch.Tensor) -> torch.Tensor:
        """positions (K,) -> (K, D)."""
        return self.pos_emb[0, positions] + self.mod_emb[0]


class TokenEncoderEmbedding(_PosModEmbedding):
    """Discrete tokens (image tokens, global tokens, sequences): ``token_emb`` lookup."""

    def __init__(self, mod: Modality, cfg: FourMConfig):
        super().__init__(mod, cfg)
        self.token_emb = nn.Embedding(mod.vocab_size, cfg.dim)

    def content(self, ids: torch.Tensor, batch_idx: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
        return self.token_emb(ids)


def _no_input(module: nn.Module, ids: torch.Tensor, field: str, dim: int) -> torch.Tensor:
    """(0, D) for a batch that does not carry this optional input; slots without the input are an error."""
    if ids.numel():
        raise ValueError(f"the batch has {ids.numel()} slots of a modality whose {field} it does not carry "
                         f"(MaskedBatch.{field} lacks it); the masker only makes slots for samples that have it")
    return ids.new_zeros((0, dim), dtype=module.mod_emb.dtype)


class PatchEncoderEmbedding(_PosModEmbedding):
    """RGB pixels: a linear projection ``proj`` of flattened (ph pw c) patches, no bias (input only)."""

    def __init__(self, mod: Modality, cfg: FourMConfig):
        super().__init__(mod, cfg)
        self.proj = nn.Linear(mod.feature_dim * mod.patch_size**2, cfg.dim, bias=False)

    def content(self, ids: torch.Tensor, batch_idx: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
        if extra is None:  # a batch without this optional input (e.g. text-only samples): no slots to fill
            return _no_input(self, ids, "pixels", self.proj.out_features)
        return self.proj(extra[batch_idx, ids])


class EmbSeqEncoderEmbedding(_PosModEmbedding):
    """T5-XXL embeddings: a linear projection ``emb_proj`` 4096 -> D (input only)."""

    def __init__(self, mod: Modality, cfg: FourMConfig):
        super().__init__(mod, cfg)
        self.emb_proj = nn.Linear(mod.feature_dim, cfg.dim)

    def content(self, ids: torch.Tensor, batch_idx: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
        if extra is None:
            return _no_input(self, ids, "embeddings", self.emb_proj.out_features)
        L = extra.shape[1]
        # the loader sends T5 rows as stored (float16); the cast is exact
        rows = extra[batch_idx, ids.clamp(max=L - 1)].to(self.emb_proj.weight.dtype)
        # id L marks a masked span, which enters as a zero vector (§5)
        return self.emb_proj(torch.where((ids < L)[:, None], rows, torch.zeros_like(rows)))


def encoder_embedding(mod: Modality, cfg: FourMConfig) -> _PosModEmbedding:
    if mod.kind == ModalityKind.PIXELS:
        return PatchEncoderEmbedding(mod, cfg)
    if mod.kind == ModalityKind.EMBEDDING_SEQ:
        return EmbSeqEncoderEmbedding(mod, cfg)
    return TokenEncoderEmbedding(mod, cfg)


class DecoderEmbedding(_PosModEmbedding):
    """Target modality: ``token_emb`` (teacher forcing for sequences), ``to_logits`` head, no bias."""

    def __init__(self, mod: Modality, cfg: FourMConfig):
        super().__init__(mod, cfg)
        self.token_emb = nn.Embedding(mod.vocab_size, cfg.dim)
        self.to_logits = nn.Linear(cfg.dim, mod.vocab_size, bias=False)
        # image-like targets are decoded from the mask token; sequences are fed their own tokens
        self.from_mask_token = mod.is_image_like
        self.causal = not mod.is_image_like
