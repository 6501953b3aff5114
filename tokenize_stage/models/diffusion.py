"""Diffusion-decoder tokenizers (RGB, depth, normals, the shared Canny/SAM edge tokenizer).

The encoder is the ViT VQ encoder; the decoder is a diffusers ``UNet2DModel`` denoiser conditioned on
the quantized token grid, which is projected (1x1 conv), upsampled to the image size and concatenated
to the noisy input channels. Training uses the DDPM forward process; decoding runs DDIM (eta = 0) in
a few steps, so a fixed seed gives a fixed reconstruction.

Shapes: x (B, C, H, W) normalised (RGB/normals/edges in [-1, 1], depth robust-standardised);
tokens (B, (H/p)*(W/p)) int64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from torch import nn

from .base import Tokenizer
from .config import DiffusionVQConfig
from .quantizer import VectorQuantizer
from .vqvae import ViTEncoder, square_grid

_BOUNDED = ("rgb", "normal", "edge")  # targets that live in [-1, 1]; depth is unbounded after standardising


class DiffusionVQ(Tokenizer):
    def __init__(self, config: DiffusionVQConfig):
        super().__init__()
        self.config = config
        ml4m = config.unet_decoder == "ml4m"
        self.encoder = ViTEncoder(config)
        # ml4m: the decoder is conditioned on the raw codes (no post-quantization projection).
        self.quantizer = VectorQuantizer(config.dim, config.codebook_size, config.codebook_dim, config.ema_decay,
                                         config.commitment_weight, config.dead_code_threshold,
                                         always_project=config.layout == "ml4m", project_back=not ml4m)
        if ml4m:
            from .unet_ml4m import PatchedUNet

            self.cond_proj = nn.Identity()
            ch = config.unet_channels
            self.unet = PatchedUNet(config.in_channels, config.out_channels, config.cond_channels,
                                    patch_size=config.unet_patch_size, model_channels=ch[0],
                                    res_blocks=config.layers_per_block,
                                    channel_mult=tuple(c // ch[0] for c in ch),
                                    attention_rates=config.unet_attention_rates, groups=config.norm_groups)
        else:
            self.cond_proj = nn.Conv2d(config.dim, config.cond_channels, kernel_size=1)
            n = len(config.unet_channels)
            self.unet = UNet2DModel(
                sample_size=config.image_size, in_channels=config.in_channels + config.cond_channels,
                out_channels=config.out_channels, block_out_channels=tuple(config.unet_channels),
                layers_per_block=config.layers_per_block, norm_num_groups=config.norm_groups,
                down_block_types=("DownBlock2D",) * n, up_block_types=("UpBlock2D",) * n,
            )
        # clip_sample off: standardised depth legitimately leaves [-1, 1].
        self.train_scheduler = DDPMScheduler(num_train_timesteps=config.train_timesteps,
                                             prediction_type=config.prediction_type, clip_sample=False,
                                             beta_schedule=config.beta_schedule,
                                             rescale_betas_zero_snr=config.zero_terminal_snr)

    def condition(self, z: torch.Tensor) -> torch.Tensor:
        """(B, N, D) quantized vectors -> conditioning map: (B, cond_channels, H, W) for the diffusers UNet,
        the (B, d, rows, cols) code grid for the ml4m UNet (which upsamples it itself)."""
        b, n, d = z.shape
        rows, cols = square_grid(n)
        grid = z.transpose(1, 2).reshape(b, d, rows, cols)
        if self.config.unet_decoder == "ml4m":
            return grid
        return F.interpolate(self.cond_proj(grid), size=(self.config.image_size,) * 2, mode="nearest")

    def denoise(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """One UNet call: noisy (B, C, H, W), timesteps (B,), conditioning from ``condition`` -> prediction."""
        if self.config.unet_decoder == "ml4m":
            return self.unet(x, t, cond)
        return self.unet(torch.cat([x, cond], 1), t).sample

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantizer(self.encoder(x.float())).indices

    def _target(self, x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        kind = self.config.prediction_type
        if kind == "sample":
            return x
        if kind == "epsilon":
            return noise
        return self.train_scheduler.get_velocity(x, noise, t)

    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        x = x.float()
        q = self.quantizer(self.encoder(x))
        cond = self.condition(q.quantized)
        noise = torch.randn_like(x)
        t = torch.randint(0, self.config.train_timesteps, (x.shape[0],), device=x.device)
        noisy = self.train_scheduler.add_noise(x, noise, t)
        pred = self.denoise(noisy, t, cond)
        recon = F.mse_loss(pred, self._target(x, noise, t))
        loss = recon + q.loss
        return loss, {"loss": loss.item(), "recon": recon.item(), "commit": q.loss.item(),
                      "perplexity": q.perplexity.item(), "usage": q.usage.item()}

    def sampling_scheduler(self, steps: int) -> DDIMScheduler:
        """The DDIM scheduler of ``decode``, set to ``steps`` steps.

        Released (ml4m) decoders sample as the reference's ``DiVAE`` does by default: "trailing" timesteps with
        its integer step ratio (``arange(T, 0, -(T // steps)) - 1``, one more step than ``steps`` when ``T`` is
        not a multiple of it), and the predicted x0 dynamically thresholded each step (ratio 0.995, max 1.0, so
        in effect clamped to [-1, 1]). Ours sample on trailing (zero terminal SNR) or leading timesteps, unclamped.
        """
        ml4m = self.config.unet_decoder == "ml4m"
        spacing = "trailing" if self.config.zero_terminal_snr else "leading"
        extra = dict(thresholding=True, dynamic_thresholding_ratio=0.995, sample_max_value=1.0) if ml4m else {}
        scheduler = DDIMScheduler.from_config(self.train_scheduler.config, timestep_spacing=spacing, **extra)
        scheduler.set_timesteps(steps)
        if ml4m:
            t = self.config.train_timesteps
            scheduler.timesteps = torch.arange(t, 0, -(t // steps), dtype=torch.int64) - 1
        return scheduler

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, steps: int | None = None, seed: int = 0,
               generator: torch.Generator | None = None, **_: object) -> torch.Tensor:
        """(B, N) tokens -> (B, C, H, W) by ``steps`` DDIM steps (eta = 0) from seeded noise."""
        cond = self.condition(self.quantizer.indices_to_vectors(tokens))
        scheduler = self.sampling_scheduler(steps or self.config.sampling_steps)
        if generator is None:
            generator = torch.Generator(device="cpu").manual_seed(seed)
        side = square_grid(tokens.shape[1])[0] * self.config.patch_size
        shape = (tokens.shape[0], self.config.out_channels, side, side)
        x = torch.randn(shape, generator=generator).to(cond.device)
        for t in scheduler.timesteps:
            out = self.denoise(x, t.to(cond.device).expand(x.shape[0]), cond)
            x = scheduler.step(out, t, x, eta=0.0).prev_sample
        return x.clamp(-1, 1) if self.config.target in _BOUNDED else x
