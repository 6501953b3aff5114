"""Memcodes quantization (Mao et al., "Discrete Representation Learning with Memcodes").

Each token attends over a learned codebook; in training the attention is a *hard* Gumbel-softmax
(one-hot forward, soft gradient backward — straight-through), at inference it is the arg-max. The
quantized vector is the value projection of the chosen code. Unlike k-means VQ, the codebook is an
ordinary parameter trained by backprop through the soft attention, so no EMA or restarts are needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .quantizer import QuantizerOutput, codebook_perplexity, codebook_usage


class Memcodes(nn.Module):
    """x: (B, N, D) -> quantized (B, N, D), indices (B, N). ``codebook_size`` codes of width ``dim``."""

    def __init__(self, dim: int, codebook_size: int, temperature: float = 1.0):
        super().__init__()
        self.codebook_size, self.temperature = codebook_size, temperature
        self.scale = dim ** -0.5
        self.codes = nn.Parameter(torch.randn(codebook_size, dim))
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N, K) attention logits over the codebook."""
        return (self.to_q(x) @ self.to_k(self.codes).t()) * self.scale

    def indices_to_vectors(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, N) -> (B, N, D): the value vector of each code."""
        return F.embedding(indices, self.to_v(self.codes))

    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        logits = self.logits(x)
        if self.training:
            attn = F.gumbel_softmax(logits, tau=self.temperature, hard=True, dim=-1)  # straight-through one-hot
        else:
            attn = F.one_hot(logits.argmax(-1), self.codebook_size).type(x.dtype)
        indices = attn.argmax(-1)
        quantized = attn @ self.to_v(self.codes)
        return QuantizerOutput(quantized, indices, x.new_zeros(()), codebook_perplexity(indices, self.codebook_size),
                               codebook_usage(indices, self.codebook_size))
