"""ViT VQ-VAE for semantic maps, feature maps (CLIP / DINOv2 / ImageBind) and SAM instance masks.

    x --patch/1x1 conv--> (B, N, D) --ViT--> VQ --ViT--> (B, N, p*p*C_out) --unpatchify--> x_hat

Semantic maps go in as one-hot class maps and come out as class logits (cross-entropy); feature maps
go in with a 1x1 projection per position (patch_size 1) and are regressed with smooth-L1; masks are
64x64 binary images (16-pixel patches -> 4x4 = 16 tokens) with a BCE loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Tokenizer
from .config import VQVAEConfig
from .quantizer import VectorQuantizer
from .vit import ViT


def unpatchify(x: torch.Tensor, grid: tuple[int, int], patch: int, channels: int) -> torch.Tensor:
    """(B, N, p*p*C) -> (B, C, rows*p, cols*p)."""
    b = x.shape[0]
    x = x.view(b, grid[0], grid[1], patch, patch, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, grid[0] * patch, grid[1] * patch)


class ViTEncoder(nn.Module):
    """(B, C, H, W) -> (B, N, D): patch (or 1x1) projection, then a ViT over the token grid."""

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_channels, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.vit = ViT(cfg.grid, cfg.dim, cfg.encoder_depth, cfg.heads, cfg.mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(self.proj(x).flatten(2).transpose(1, 2))


class VQVAE(Tokenizer):
    """ViT VQ-VAE. ``encode``: (B, C, H, W) float, or (B, H, W) int64 class ids for semseg -> (B, N) int64."""

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.config = config
        self.encoder = ViTEncoder(config)
        self.quantizer = VectorQuantizer(config.dim, config.codebook_size, config.codebook_dim, config.ema_decay,
                                         config.commitment_weight, config.dead_code_threshold)
        self.decoder = ViT(config.grid, config.dim, config.decoder_depth, config.heads, config.mlp_ratio)
        self.head = nn.Linear(config.dim, config.patch_size ** 2 * config.out_channels)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.target == "semseg":  # class ids (B, H, W) -> one-hot (B, K, H, W)
            return F.one_hot(x.long(), self.config.in_channels).permute(0, 3, 1, 2).float()
        return x.float()

    def _decode_vectors(self, z: torch.Tensor) -> torch.Tensor:
        """(B, N, D) quantized vectors -> raw decoder output (B, C_out, H, W): logits or values."""
        out = self.head(self.decoder(z))
        return unpatchify(out, self.config.grid, self.config.patch_size, self.config.out_channels)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantizer(self.encoder(self._prepare(x))).indices

    def decode_raw(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N) -> logits (semseg, mask) or values (features), (B, C_out, H, W)."""
        return self._decode_vectors(self.quantizer.indices_to_vectors(tokens))

    def decode(self, tokens: torch.Tensor, **_: object) -> torch.Tensor:
        """(B, N) -> class ids (B, H, W) for semseg, probabilities (B, 1, H, W) for masks, else values."""
        raw = self.decode_raw(tokens)
        if self.config.target == "semseg":
            return raw.argmax(1)
        if self.config.target == "mask":
            return raw.sigmoid()
        return raw

    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        q = self.quantizer(self.encoder(self._prepare(x)))
        raw = self._decode_vectors(q.quantized)
        if self.config.target == "semseg":
            recon = F.cross_entropy(raw, x.long())
        elif self.config.target == "mask":
            recon = F.binary_cross_entropy_with_logits(raw, x.float())
        else:
            recon = F.smooth_l1_loss(raw, x.float())
        loss = recon + q.loss
        return loss, {"loss": loss.item(), "recon": recon.item(), "commit": q.loss.item(),
                      "perplexity": q.perplexity.item(), "usage": q.usage.item()}
