"""Bottleneck-MLP + Memcodes tokenizers for vectors: SMPL pose (207-d -> 8 tokens) and global
DINOv2 / ImageBind embeddings.

Native layout: encoder MLP -> n_tokens x token_dim -> one shared Memcodes codebook -> decoder MLP.
ml4m layout (apple/ml-4m's released tokenizers): encoder MLP -> width -> ``quant_proj`` ->
n_tokens x token_dim, token i quantized with codebook i -> ``post_quant_proj`` -> decoder MLP; blocks
expand 4x and the MLPs end without a LayerNorm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Tokenizer
from .config import MemcodesConfig
from .memcodes import Memcodes


class ResidualMLPBlock(nn.Module):
    """x + Linear(GELU(Linear(LN(x)))), hidden width ``expansion * width``."""

    def __init__(self, width: int, expansion: int = 1):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width * expansion), nn.GELU(),
                                 nn.Linear(width * expansion, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class BottleneckMLP(nn.Module):
    """(B, in_dim) -> (B, out_dim) through ``blocks`` residual blocks of ``width``."""

    def __init__(self, in_dim: int, out_dim: int, width: int, blocks: int, expansion: int = 1,
                 final_norm: bool = True):
        super().__init__()
        self.inp = nn.Linear(in_dim, width)
        self.blocks = nn.Sequential(*(ResidualMLPBlock(width, expansion) for _ in range(blocks)))
        self.out = nn.Sequential(nn.LayerNorm(width) if final_norm else nn.Identity(), nn.Linear(width, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(self.inp(x)))


class MLPMemcodes(Tokenizer):
    """``encode``: (B, in_dim) float -> (B, n_tokens) int64; ``decode`` the reverse."""

    def __init__(self, config: MemcodesConfig):
        super().__init__()
        self.config = config
        ml4m = config.layout == "ml4m"
        latent = config.n_tokens * config.token_dim
        hidden = config.width if ml4m else latent  # what the encoder MLP emits / the decoder MLP takes
        self.encoder = BottleneckMLP(config.in_dim, hidden, config.width, config.blocks, config.expansion,
                                     final_norm=not ml4m)
        self.quant_proj = nn.Linear(hidden, latent) if ml4m else nn.Identity()
        self.quantizer = Memcodes(config.token_dim, config.codebook_size, config.gumbel_temperature,
                                  heads=config.n_tokens if ml4m else 1, query_proj=not ml4m)
        self.post_quant_proj = nn.Linear(latent, hidden) if ml4m else nn.Identity()
        self.decoder = BottleneckMLP(hidden, config.in_dim, config.width, config.blocks, config.expansion,
                                     final_norm=not ml4m)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, n_tokens, token_dim) pre-quantization latents."""
        return self.quant_proj(self.encoder(x.float())).view(x.shape[0], self.config.n_tokens, self.config.token_dim)

    def _decode_vectors(self, q: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_proj(q.flatten(1)))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantizer(self._tokens(x)).indices

    def decode(self, tokens: torch.Tensor, **_: object) -> torch.Tensor:
        return self._decode_vectors(self.quantizer.indices_to_vectors(tokens))

    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        q = self.quantizer(self._tokens(x))
        x_hat = self._decode_vectors(q.quantized)
        if self.config.target == "global":  # embeddings are compared by angle (retrieval), not magnitude
            recon = (1 - F.cosine_similarity(x_hat, x.float(), dim=-1)).mean()
        else:
            recon = F.mse_loss(x_hat, x.float())
        return recon, {"loss": recon.item(), "recon": recon.item(), "perplexity": q.perplexity.item(),
                       "usage": q.usage.item()}
