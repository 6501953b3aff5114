"""ViT VQ-VAE for semantic maps, feature maps (CLIP / DINOv2 / ImageBind) and SAM instance masks.

    x --patch/1x1 conv--> (B, N, D) --ViT--> VQ --ViT--> (B, N, p*p*C_out) --unpatchify--> x_hat

Semantic maps go in as one-hot class maps and come out as class logits (cross-entropy); feature maps
go in with a 1x1 projection per position (patch_size 1) and are regressed with smooth-L1; masks are
64x64 binary images (16-pixel patches -> 4x4 = 16 tokens) with a BCE loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import Tokenizer
from .config import VQVAEConfig
from .quantizer import VectorQuantizer
from .vit import ViT


def unpatchify(x: torch.Tensor, grid: tuple[int, int], patch: int, channels: int,
               channels_first: bool = False) -> torch.Tensor:
    """(B, N, p*p*C) -> (B, C, rows*p, cols*p). Each token's vector is ordered (p, p, C) natively and
    (C, p, p) in the ml4m layout (``channels_first``)."""
    b = x.shape[0]
    if channels_first:
        x = x.view(b, grid[0], grid[1], channels, patch, patch).permute(0, 3, 1, 4, 2, 5)
    else:
        x = x.view(b, grid[0], grid[1], patch, patch, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, channels, grid[0] * patch, grid[1] * patch)


def square_grid(n_tokens: int) -> tuple[int, int]:
    """Token count -> (side, side); the reference decodes whatever square grid it is given."""
    side = math.isqrt(n_tokens)
    if side * side != n_tokens:
        raise ValueError(f"{n_tokens} tokens do not form a square grid")
    return side, side


class ConvNeXtBlock(nn.Module):
    """Depth-wise 7x7 conv -> LayerNorm -> 4x MLP -> layer scale, residual. (B, C, H, W) -> same.

    The ml4m SAM-mask decoder ends with two of these to smooth patch seams (``out_conv``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        h = self.gamma * self.pwconv2(self.act(self.pwconv1(h)))
        return x + h.permute(0, 3, 1, 2)


class ViTEncoder(nn.Module):
    """(B, C, H, W) -> (B, N, D): patch (or 1x1) projection, then a ViT over the token grid."""

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        in_channels = cfg.class_embed_dim or cfg.in_channels
        self.proj = nn.Conv2d(in_channels, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.vit = ViT(cfg.grid, cfg.dim, cfg.encoder_depth, cfg.heads, cfg.mlp_ratio,
                       final_norm=cfg.layout == "native", pos_grid=cfg.pos_grid, post_mlp=cfg.post_mlp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        return self.vit(h.flatten(2).transpose(1, 2), grid=(h.shape[2], h.shape[3]))


class VQVAE(Tokenizer):
    """ViT VQ-VAE. ``encode``: (B, C, H, W) float, or (B, H, W) int64 class ids for semseg -> (B, N) int64."""

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.config = config
        ml4m = config.layout == "ml4m"
        # Semseg: ml4m embeds class ids (cls_emb); native feeds a one-hot map.
        self.cls_emb = nn.Embedding(config.in_channels, config.class_embed_dim) if config.class_embed_dim else None
        self.encoder = ViTEncoder(config)
        self.quantizer = VectorQuantizer(config.dim, config.codebook_size, config.codebook_dim, config.ema_decay,
                                         config.commitment_weight, config.dead_code_threshold, always_project=ml4m)
        self.decoder = ViT(config.grid, config.dim, config.decoder_depth, config.heads, config.mlp_ratio,
                           final_norm=not ml4m, pos_grid=config.pos_grid, post_mlp=config.post_mlp)
        self.head = nn.Linear(config.dim, config.patch_size ** 2 * config.out_channels)
        self.out_conv = (nn.Sequential(ConvNeXtBlock(config.out_channels), ConvNeXtBlock(config.out_channels))
                         if config.out_conv else None)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.target == "semseg":  # class ids (B, H, W) -> embedded (ml4m) or one-hot (B, K, H, W)
            if self.cls_emb is not None:
                return self.cls_emb(x.long()).permute(0, 3, 1, 2)
            return F.one_hot(x.long(), self.config.in_channels).permute(0, 3, 1, 2).float()
        return x.float()

    def _decode_vectors(self, z: torch.Tensor) -> torch.Tensor:
        """(B, N, D) quantized vectors -> raw decoder output (B, C_out, H, W): logits or values."""
        grid = square_grid(z.shape[1])
        out = self.head(self.decoder(z, grid=grid))
        out = unpatchify(out, grid, self.config.patch_size, self.config.out_channels,
                         channels_first=self.config.layout == "ml4m")
        return self.out_conv(out) if self.out_conv is not None else out

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
