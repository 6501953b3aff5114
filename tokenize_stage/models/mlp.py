"""Bottleneck-MLP + Memcodes tokenizers for vectors: SMPL pose (207-d -> 8 tokens) and global
DINOv2 / ImageBind embeddings (-> 16 tokens, cosine loss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Tokenizer
from .config import MemcodesConfig
from .memcodes import Memcodes


class ResidualMLPBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class BottleneckMLP(nn.Module):
    """(B, in_dim) -> (B, out_dim) through ``blocks`` residual blocks of ``width``."""

    def __init__(self, in_dim: int, out_dim: int, width: int, blocks: int):
        super().__init__()
        self.inp = nn.Linear(in_dim, width)
        self.blocks = nn.Sequential(*(ResidualMLPBlock(width) for _ in range(blocks)))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(self.inp(x)))


class MLPMemcodes(Tokenizer):
    """``encode``: (B, in_dim) float -> (B, n_tokens) int64; ``decode`` the reverse."""

    def __init__(self, config: MemcodesConfig):
        super().__init__()
        self.config = config
        self.encoder = BottleneckMLP(config.in_dim, config.n_tokens * config.token_dim, config.width, config.blocks)
        self.quantizer = Memcodes(config.token_dim, config.codebook_size, config.gumbel_temperature)
        self.decoder = BottleneckMLP(config.n_tokens * config.token_dim, config.in_dim, config.width, config.blocks)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.float()).view(x.shape[0], self.config.n_tokens, self.config.token_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantizer(self._tokens(x)).indices

    def decode(self, tokens: torch.Tensor, **_: object) -> torch.Tensor:
        return self.decoder(self.quantizer.indices_to_vectors(tokens).flatten(1))

    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        q = self.quantizer(self._tokens(x))
        x_hat = self.decoder(q.quantized.flatten(1))
        if self.config.target == "global":  # embeddings are compared by angle (retrieval), not magnitude
            recon = (1 - F.cosine_similarity(x_hat, x.float(), dim=-1)).mean()
        else:
            recon = F.mse_loss(x_hat, x.float())
        return recon, {"loss": recon.item(), "recon": recon.item(), "perplexity": q.perplexity.item(),
                       "usage": q.usage.item()}
