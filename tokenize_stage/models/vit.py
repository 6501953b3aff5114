"""A small pre-norm ViT: fixed 2-D sin-cos positions, attention via scaled_dot_product_attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def sincos_2d(rows: int, cols: int, dim: int, temperature: float = 10_000.0) -> torch.Tensor:
    """Fixed 2-D sin-cos position table (rows*cols, dim): dim/4 sin + dim/4 cos per axis (4M-FACTS §9)."""
    assert dim % 4 == 0, "sin-cos 2-D positions need dim divisible by 4"
    y, x = torch.meshgrid(torch.arange(rows, dtype=torch.float32), torch.arange(cols, dtype=torch.float32),
                          indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    out_x = x.reshape(-1, 1) * omega
    out_y = y.reshape(-1, 1) * omega
    return torch.cat([out_x.sin(), out_x.cos(), out_y.sin(), out_y.cos()], dim=1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, D) -> (B, N, D); bidirectional attention over all tokens."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Transformer over a (rows, cols) token grid with sin-cos positions. (B, N, D) -> (B, N, D).

    Native layout: a fixed position buffer for ``grid`` and a final LayerNorm. ml4m layout
    (``pos_grid`` set, ``final_norm=False``): the table is a frozen parameter ``pos_emb`` (1, D, g, g)
    resized bicubically to the input grid (so a 448-trained table serves 224 inputs), and ``post_mlp``
    adds x + MLP_tanh(LN(x)) after the blocks (ViT-VQGAN's extra MLP).
    """

    def __init__(self, grid: tuple[int, int], dim: int, depth: int, heads: int, mlp_ratio: float = 4.0,
                 final_norm: bool = True, pos_grid: int | None = None, post_mlp: bool = False):
        super().__init__()
        self.grid = grid
        if pos_grid is None:
            self.register_buffer("pos", sincos_2d(grid[0], grid[1], dim), persistent=False)
            self.pos_emb = None
        else:
            table = sincos_2d(pos_grid, pos_grid, dim).t().reshape(1, dim, pos_grid, pos_grid)
            self.pos_emb = nn.Parameter(table, requires_grad=False)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6) if final_norm else nn.Identity()
        if post_mlp:
            self.norm_mlp = nn.LayerNorm(dim, eps=1e-6)
            hidden = int(dim * mlp_ratio)
            self.post_mlp = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim))
        else:
            self.post_mlp = None

    def positions(self, grid: tuple[int, int]) -> torch.Tensor:
        """(N, D) position table for a (rows, cols) grid."""
        if self.pos_emb is None:
            return self.pos
        table = F.interpolate(self.pos_emb, size=grid, mode="bicubic", align_corners=False)
        return table.flatten(2).transpose(1, 2)[0]

    def forward(self, x: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        x = x + self.positions(grid or self.grid)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        if self.post_mlp is not None:
            x = x + self.post_mlp(self.norm_mlp(x))
        return x
