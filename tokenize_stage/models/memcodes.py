"""Memcodes quantization (Mao et al., "Discrete Representation Learning with Memcodes").

Each token attends over a learned codebook; in training the attention is a *hard* Gumbel-softmax
(one-hot forward, soft gradient backward — straight-through), at inference it is the arg-max. The
quantized vector is the value projection of the chosen code. Unlike k-means VQ, the codebook is an
ordinary parameter trained by backprop through the soft attention, so no EMA or restarts are needed.

``heads`` codebooks: 1 = one codebook shared by every token (native layout); ``heads = N`` = token i
uses codebook i (the ml4m layout, where the N "tokens" of one vector are the heads of one query).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .quantizer import QuantizerOutput, codebook_perplexity, codebook_usage


class HeadProjection(nn.Module):
    """Per-head linear map without bias, ``weight`` (H, d_in, d_out): (H, K, d_in) -> (H, K, d_out)."""

    def __init__(self, heads: int, dim: int):
        super().__init__()
        bound = dim ** -0.5  # nn.Linear's default range
        self.weight = nn.Parameter(torch.empty(heads, dim, dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("hkd,hdc->hkc", x, self.weight)


class Memcodes(nn.Module):
    """x: (B, N, d) -> quantized (B, N, d), indices (B, N). ``codebook_size`` codes of width ``dim`` per head.

    Args:
        dim: width d of each token's vector.
        codebook_size: codes K per codebook.
        temperature: Gumbel-softmax temperature in training.
        heads: 1 (shared codebook) or N (one per token position).
        query_proj: project tokens before the lookup (native) or use them as they are (ml4m).
    """

    def __init__(self, dim: int, codebook_size: int, temperature: float = 1.0, heads: int = 1,
                 query_proj: bool = True):
        super().__init__()
        self.codebook_size, self.temperature, self.heads = codebook_size, temperature, heads
        self.scale = dim ** -0.5
        self.codes = nn.Parameter(torch.randn(heads, codebook_size, dim))
        self.to_q = nn.Linear(dim, dim, bias=False) if query_proj else None
        self.to_k = HeadProjection(heads, dim)
        self.to_v = HeadProjection(heads, dim)

    def _per_token(self, table: torch.Tensor, n: int) -> torch.Tensor:
        """(H, K, d) -> (N, K, d): the codebook each of the N token positions uses."""
        if self.heads == 1:
            return table.expand(n, -1, -1)
        if n != self.heads:
            raise ValueError(f"{n} tokens but {self.heads} per-token codebooks")
        return table

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, d) -> (B, N, K) attention logits over each token's codebook."""
        q = (self.to_q(x) if self.to_q is not None else x) * self.scale
        return torch.einsum("bnd,nkd->bnk", q, self._per_token(self.to_k(self.codes), x.shape[1]))

    def indices_to_vectors(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, N) -> (B, N, d): the value vector of each code."""
        values = self._per_token(self.to_v(self.codes), indices.shape[1])  # (N, K, d)
        return values[torch.arange(indices.shape[1], device=indices.device), indices]

    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        logits = self.logits(x)
        if self.training:
            attn = F.gumbel_softmax(logits, tau=self.temperature, hard=True, dim=-1)  # straight-through one-hot
        else:
            attn = F.one_hot(logits.argmax(-1), self.codebook_size).type(x.dtype)
        indices = attn.argmax(-1)
        quantized = torch.einsum("bnk,nkd->bnd", attn, self._per_token(self.to_v(self.codes), x.shape[1]))
        return QuantizerOutput(quantized, indices, x.new_zeros(()), codebook_perplexity(indices, self.codebook_size),
                               codebook_usage(indices, self.codebook_size))
