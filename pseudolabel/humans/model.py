"""HMR2-style human mesh recovery network, written for this project (no 4D-Humans code).

    crop (B, 3, H, W) --ViT--> tokens (B, Hp*Wp, D) --decoder head--> SMPL params + weak-perspective camera

The head starts from the mean parameters (buffers ``init_pose`` (1, 6*24), ``init_betas`` (1, 10),
``init_cam`` (1, 3)) and adds one residual prediction from a single learned query that self-attends,
cross-attends to the ViT tokens and goes through an MLP, ``dec_depth`` times (pre-norm). The 6D rotations
are turned into rotation matrices, so outputs are proper rotations by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pseudolabel.humans.config import HMR2Config
from pseudolabel.humans.rotations import rot6d_to_rotmat


class ViTBackbone(nn.Module):
    """timm VisionTransformer without class token or head; ViTPose patch padding. (B,3,H,W) -> (B,Hp*Wp,D)."""

    def __init__(self, cfg: HMR2Config) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.vit = VisionTransformer(img_size=(cfg.image_height, cfg.image_width), patch_size=cfg.patch_size,
                                     embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
                                     mlp_ratio=cfg.mlp_ratio, qkv_bias=True, class_token=False, global_pool="",
                                     num_classes=0)
        # ViTPose pads the patch conv by 2: same 16x12 grid for 256x192 but shifted receptive fields; needed to
        # reproduce HMR2.0's features with its weights
        self.vit.patch_embed.proj.padding = (cfg.patch_padding, cfg.patch_padding)
        if tuple(self.vit.patch_embed.grid_size) != cfg.grid:
            raise ValueError(f"patch padding changes the grid: {self.vit.patch_embed.grid_size} vs {cfg.grid}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_features(x)  # (B, N, D) after the final LayerNorm


class SelfAttention(nn.Module):
    """Multi-head attention of the query tokens among themselves; qkv without bias (as HMR2's head)."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.out = nn.Linear(heads * dim_head, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # each (B, h, n, d)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, -1))


class CrossAttention(nn.Module):
    """Queries (B, n, dim) attend to context tokens (B, N, context_dim)."""

    def __init__(self, dim: int, context_dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, heads * dim_head, bias=False)
        self.kv = nn.Linear(context_dim, 2 * heads * dim_head, bias=False)
        self.out = nn.Linear(heads * dim_head, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        m = context.shape[1]
        q = self.q(x).view(b, n, self.heads, -1).transpose(1, 2)
        k, v = self.kv(context).view(b, m, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class DecoderLayer(nn.Module):
    """Pre-norm: x += SA(LN x); x += CA(LN x, ctx); x += FF(LN x)."""

    def __init__(self, cfg: HMR2Config) -> None:
        super().__init__()
        d = cfg.dec_dim
        self.self_norm = nn.LayerNorm(d)
        self.self_attn = SelfAttention(d, cfg.dec_heads, cfg.dec_dim_head)
        self.cross_norm = nn.LayerNorm(d)
        self.cross_attn = CrossAttention(d, cfg.embed_dim, cfg.dec_heads, cfg.dec_dim_head)
        self.ffn_norm = nn.LayerNorm(d)
        self.ffn = FeedForward(d, cfg.dec_mlp_dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.self_norm(x))
        x = x + self.cross_attn(self.cross_norm(x), context)
        return x + self.ffn(self.ffn_norm(x))


@dataclass
class SMPLOutput:
    """Per crop: global_orient (B, 3, 3), body_pose (B, 23, 3, 3), betas (B, 10), camera (B, 3) = (s, tx, ty)."""

    global_orient: torch.Tensor
    body_pose: torch.Tensor
    betas: torch.Tensor
    camera: torch.Tensor


class SMPLHead(nn.Module):
    """One zero-input query token -> residuals on the mean SMPL parameters and camera."""

    def __init__(self, cfg: HMR2Config) -> None:
        super().__init__()
        self.cfg = cfg
        n_rot = cfg.num_body_joints + 1  # + global orientation
        self.token_embed = nn.Linear(1, cfg.dec_dim)  # HMR2 feeds a constant zero token through a Linear
        self.query_pos = nn.Parameter(torch.randn(1, 1, cfg.dec_dim) * 0.02)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.dec_depth))
        self.pose_out = nn.Linear(cfg.dec_dim, 6 * n_rot)
        self.shape_out = nn.Linear(cfg.dec_dim, cfg.num_betas)
        self.cam_out = nn.Linear(cfg.dec_dim, 3)
        # mean parameters: identity rotations, zero shape, a typical weak-perspective scale; HMR2.0's
        # checkpoint overwrites them with SMPL's mean pose/shape
        ident6d = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).repeat(n_rot)
        self.register_buffer("init_pose", ident6d[None].clone())
        self.register_buffer("init_betas", torch.zeros(1, cfg.num_betas))
        self.register_buffer("init_cam", torch.tensor([[0.9, 0.0, 0.0]]))

    def forward(self, tokens: torch.Tensor) -> SMPLOutput:
        """tokens: (B, N, embed_dim) backbone features."""
        b = tokens.shape[0]
        x = self.token_embed(tokens.new_zeros(b, 1, 1)) + self.query_pos  # (B, 1, dec_dim)
        for layer in self.layers:
            x = layer(x, tokens)
        x = x[:, 0]
        pose6d = self.pose_out(x) + self.init_pose  # (B, 6*24)
        rot = rot6d_to_rotmat(pose6d.view(b, -1, 6))  # (B, 24, 3, 3)
        return SMPLOutput(global_orient=rot[:, 0], body_pose=rot[:, 1:], betas=self.shape_out(x) + self.init_betas,
                          camera=self.cam_out(x) + self.init_cam)


class HMR2(nn.Module):
    """ViT backbone + SMPL head. forward: (B, 3, H, W) normalised crops -> :class:`SMPLOutput`."""

    def __init__(self, cfg: HMR2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = ViTBackbone(cfg)
        self.head = SMPLHead(cfg)

    def forward(self, crops: torch.Tensor) -> SMPLOutput:
        return self.head(self.backbone(crops))
