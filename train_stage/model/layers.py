"""Transformer blocks of 4M: pre-norm, SwiGLU, no biases, attention through SDPA.

Attention masks are boolean with True = "may attend", shaped (B, 1, Lq, Lk) so that
``scaled_dot_product_attention`` can pick a fused kernel on GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import FourMConfig


class LayerNorm(nn.Module):
    """LayerNorm whose ``bias`` is a learned parameter, or, without bias, an all-zero persistent buffer.

    The released checkpoints store a zero ``bias`` for every norm even when ``norm_bias`` is false
    (their LayerNorm registers it as a buffer), so our state dict carries the same entry and loads
    them strictly; the zero bias changes nothing in the output. x (..., D) -> (..., D).
    """

    def __init__(self, dim: int, eps: float = 1e-6, bias: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        if bias:
            self.bias = nn.Parameter(torch.zeros(dim))
        else:
            self.register_buffer("bias", torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


def layer_norm(cfg: FourMConfig) -> LayerNorm:
    return LayerNorm(cfg.dim, eps=1e-6, bias=cfg.norm_bias)


class SwiGLU(nn.Module):
    """fc2(silu(fc1 x) * fc3 x); hidden width int(2/3 * 4 * D)."""

    def __init__(self, cfg: FourMConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.dim, cfg.mlp_hidden, bias=cfg.mlp_bias)
        self.fc2 = nn.Linear(cfg.mlp_hidden, cfg.dim, bias=cfg.mlp_bias)
        self.fc3 = nn.Linear(cfg.dim, cfg.mlp_hidden, bias=cfg.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(x)) * self.fc3(x))


class SelfAttention(nn.Module):
    def __init__(self, cfg: FourMConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=cfg.qkv_bias)
        self.proj = nn.Linear(cfg.dim, cfg.dim, bias=cfg.proj_bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, L, D), mask (B, 1, L, L) bool -> (B, L, D)."""
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(B, L, D))


class CrossAttention(nn.Module):
    def __init__(self, cfg: FourMConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.q = nn.Linear(cfg.dim, cfg.dim, bias=cfg.qkv_bias)
        self.kv = nn.Linear(cfg.dim, 2 * cfg.dim, bias=cfg.qkv_bias)
        self.proj = nn.Linear(cfg.dim, cfg.dim, bias=cfg.proj_bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, Lq, D), context (B, Lk, D), mask (B, 1, 1|Lq, Lk) bool -> (B, Lq, D)."""
        B, Lq, D = x.shape
        Lk = context.shape[1]
        h = self.num_heads
        q = self.q(x).view(B, Lq, h, D // h).transpose(1, 2)
        k, v = self.kv(context).view(B, Lk, 2, h, D // h).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(B, Lq, D))


class EncoderBlock(nn.Module):
    def __init__(self, cfg: FourMConfig):
        super().__init__()
        self.norm1 = layer_norm(cfg)
        self.attn = SelfAttention(cfg)
        self.norm2 = layer_norm(cfg)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    def __init__(self, cfg: FourMConfig):
        super().__init__()
        self.norm1 = layer_norm(cfg)
        self.self_attn = SelfAttention(cfg)
        self.query_norm = layer_norm(cfg)
        self.context_norm = layer_norm(cfg)
        self.cross_attn = CrossAttention(cfg)
        self.norm2 = layer_norm(cfg)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: torch.Tensor, context: torch.Tensor, self_mask: torch.Tensor | None,
                cross_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x), self_mask)
        x = x + self.cross_attn(self.query_norm(x), self.context_norm(context), cross_mask)
        return x + self.mlp(self.norm2(x))
