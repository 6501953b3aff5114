"""The diffusion decoder of apple/ml-4m's released RGB / depth / normal / edge tokenizers.

A guided-diffusion style UNet ("ADM": ResBlocks with a timestep embedding added after the first conv,
single-head spatial self-attention at chosen downsampling rates, learned conv down/up-sampling, skip
concatenation) run on a *patched* image: the noisy input (B, C, H, W) is folded into
(B, C*p*p, H/p, W/p), the quantized token grid is nearest-upsampled to H/p x W/p and concatenated,
and the output is unfolded back. Module names follow the released checkpoints (``input_blocks``,
``middle_block``, ``output_blocks``, ``in_layers``/``emb_layers``/``out_layers``, ``qkv``/``proj_out``),
so their ``decoder.*`` tensors load under ``unet.*`` without renaming.

Shapes: sample (B, C, H, W), t (B,) timesteps, cond (B, D_cond, h, w) -> (B, C, H, W).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """(B,) timesteps -> (B, dim) [cos | sin] features at geometrically spaced frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=-1)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups, computed in float32."""

    def __init__(self, channels: int, groups: int = 32):
        super().__init__(groups, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


class ResBlock(nn.Module):
    """GN-SiLU-conv, + projected timestep embedding, GN-SiLU-(dropout)-conv, + skip (1x1 when widths differ)."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None, groups: int = 32):
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(GroupNorm32(channels, groups), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(GroupNorm32(out_channels, groups), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x) + self.emb_layers(emb)[..., None, None]
        return self.skip_connection(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    """Single-head self-attention over all positions (1-D convs as in the reference), residual."""

    def __init__(self, channels: int, groups: int = 32, heads: int = 1):
        super().__init__()
        self.heads = heads
        self.norm = GroupNorm32(channels, groups)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        flat = x.reshape(b, c, h * w)
        qkv = self.qkv(self.norm(flat))  # heads split before q/k/v (the reference's legacy order)
        q, k, v = qkv.reshape(b * self.heads, 3 * c // self.heads, h * w).chunk(3, dim=1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = out.transpose(1, 2).reshape(b, c, h * w)
        return (flat + self.proj_out(out)).reshape(b, c, h, w)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Stage(nn.ModuleList):
    """Layers applied in order; ResBlocks also receive the timestep embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class PatchedUNet(nn.Module):
    """ADM UNet on a p x p patched image with the conditioning grid concatenated (see module doc)."""

    def __init__(self, in_channels: int, out_channels: int, cond_channels: int, patch_size: int = 4,
                 model_channels: int = 256, res_blocks: int = 3, channel_mult: tuple[int, ...] = (1, 2, 2, 2),
                 attention_rates: tuple[int, ...] = (4, 8), groups: int = 32):
        super().__init__()
        self.patch, self.out_channels, self.model_channels = patch_size, out_channels, model_channels
        emb = model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb))
        ch = model_channels * channel_mult[0]
        self.input_blocks = nn.ModuleList([Stage([nn.Conv2d(in_channels * patch_size ** 2 + cond_channels, ch, 3,
                                                            padding=1)])])
        skips, rate = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb, model_channels * mult, groups)]
                ch = model_channels * mult
                if rate in attention_rates:
                    layers.append(AttentionBlock(ch, groups))
                self.input_blocks.append(Stage(layers))
                skips.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(Stage([Downsample(ch)]))
                skips.append(ch)
                rate *= 2
        self.middle_block = Stage([ResBlock(ch, emb, groups=groups), AttentionBlock(ch, groups),
                                   ResBlock(ch, emb, groups=groups)])
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), emb, model_channels * mult, groups)]
                ch = model_channels * mult
                if rate in attention_rates:
                    layers.append(AttentionBlock(ch, groups))
                if level and i == res_blocks:
                    layers.append(Upsample(ch))
                    rate //= 2
                self.output_blocks.append(Stage(layers))
        self.out = nn.Sequential(GroupNorm32(ch, groups), nn.SiLU(),
                                 nn.Conv2d(model_channels * channel_mult[0], out_channels * patch_size ** 2, 3,
                                           padding=1))

    def forward(self, sample: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b, c, h, w = sample.shape
        p = self.patch
        # (B, C, H, W) -> (B, C*p*p, H/p, W/p), channel order (c, ph, pw) as the reference
        x = sample.reshape(b, c, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4).reshape(b, c * p * p, h // p, w // p)
        x = torch.cat([x, F.interpolate(cond, size=(h // p, w // p), mode="nearest")], dim=1)
        emb = self.time_embed(timestep_embedding(t.reshape(-1).expand(b), self.model_channels))
        hs = []
        for stage in self.input_blocks:
            x = stage(x, emb)
            hs.append(x)
        x = self.middle_block(x, emb)
        for stage in self.output_blocks:
            x = stage(torch.cat([x, hs.pop()], dim=1), emb)
        x = self.out(x)
        o = self.out_channels
        return x.reshape(b, o, p, p, h // p, w // p).permute(0, 1, 4, 2, 5, 3).reshape(b, o, h, w)


def unet_config_from_ml4m(cfg: dict, shapes: dict[str, tuple[int, ...]]) -> dict:
    """DiffusionVQConfig fields for a released DiVAE (``unet_patched``: p=4, 256 channels, 3 ResBlocks per
    level, multipliers (1, 2, 2, 2), attention at 4x and 8x); sizes checked against the weights' shapes."""
    if cfg.get("dec_type") != "unet_patched":  # the release's only diffusion decoder preset
        raise ValueError(f"dec_type {cfg.get('dec_type')!r}: only the released 'unet_patched' decoder is supported")
    patch = int(cfg.get("patch_size_dec") or 4)
    model_channels = shapes["decoder.input_blocks.0.0.weight"][0]
    # "unet": our extension for decoders smaller than the preset (tiny tests); the release never has it
    small = cfg.get("unet") or {}
    return dict(unet_decoder="ml4m", unet_patch_size=patch,
                unet_channels=tuple(small.get("channels", [model_channels * m for m in (1, 2, 2, 2)])),
                layers_per_block=int(small.get("res_blocks", 3)),
                unet_attention_rates=tuple(small.get("attention_rates", (4, 8))), norm_groups=int(small.get("groups", 32)),
                cond_channels=int(cfg["latent_dim"]),
                train_timesteps=int(cfg.get("num_train_timesteps", 1000)),
                prediction_type=str(cfg.get("prediction_type", "sample")),
                beta_schedule=str(cfg.get("beta_schedule", "linear")),
                zero_terminal_snr=bool(cfg.get("zero_terminal_snr", True)))
