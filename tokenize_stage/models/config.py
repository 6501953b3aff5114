"""Typed tokenizer configs. One config class per architecture; ``config.json`` holds one of them.

A config fixes everything needed to rebuild the module (weights come from safetensors). ``target``
says what the tokenizer reconstructs, which picks its input normalisation, loss and report metric.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, TypeAdapter

from fourm_core.config import StrictModel

# What a tokenizer reconstructs: picks normalisation (normalize.py), loss and the tokenizer-bound metric.
Target = Literal["semseg", "features", "mask", "pose", "global", "rgb", "depth", "normal", "edge"]
# Module layout. "native": our own design (final LayerNorm in the ViTs, l2-normalised code space reached by
# a projection only when widths differ, shared Memcodes codebook with a query projection). "ml4m": the layout
# of apple/ml-4m's released tokenizers (no final LayerNorm, quant_proj / post_quant_proj always present,
# one Memcodes codebook per token, expansion-4 bottleneck MLP blocks), so their checkpoints load strictly
# through the name map in ``tokenize_stage.models.ml4m``. Both train with train_tokenizer.
Layout = Literal["native", "ml4m"]


class _Common(StrictModel):
    name: str = Field(description="tokenizer name from the modality registry, e.g. 'semseg_vqvae'")
    profile: str = Field("custom", description="'production', 'tiny' or 'custom'")
    modality: str = Field(description="registry modality it serves (first one when shared)")
    target: Target
    codebook_size: int = Field(gt=1)
    layout: Layout = "native"


class VQVAEConfig(_Common):
    """ViT encoder -> cosine VQ -> ViT decoder over a (image_size/patch_size)^2 grid."""

    architecture: Literal["vqvae"] = "vqvae"
    in_channels: int = Field(gt=0, description="input channels; classes for semseg (one-hot)")
    out_channels: int = Field(gt=0, description="decoder output channels (class logits for semseg)")
    image_size: int = Field(gt=0, description="input side in pixels (== token grid side for feature maps)")
    patch_size: int = Field(gt=0, description="1 for feature maps: a 1x1 conv projection per position")
    dim: int = 768
    encoder_depth: int = 12
    decoder_depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    codebook_dim: int = 32
    commitment_weight: float = 0.25
    ema_decay: float = 0.99
    dead_code_threshold: float = 1.0
    # Options of the ml4m layout (harmless defaults for native): the reference embeds semseg class ids into
    # ``class_embed_dim`` channels (``cls_emb``) before the patch projection instead of a one-hot map; keeps
    # a sin-cos position table of ``pos_grid``^2 as a parameter, resized bicubically to the token grid; adds a
    # Tanh MLP after the encoder / before the decoder head (``post_mlp``, ViT-VQGAN) and two ConvNeXt
    # blocks on the decoder output (``out_conv``, SAM masks).
    class_embed_dim: int | None = Field(None, gt=0)
    pos_grid: int | None = Field(None, gt=0)
    post_mlp: bool = False
    out_conv: bool = False

    @property
    def grid(self) -> tuple[int, int]:
        side = self.image_size // self.patch_size
        return side, side

    @property
    def n_tokens(self) -> int:
        return self.grid[0] * self.grid[1]


class DiffusionVQConfig(VQVAEConfig):
    """ViT VQ encoder whose quantized grid conditions a diffusers UNet2DModel (concatenated to the noisy input)."""

    architecture: Literal["diffusion_vq"] = "diffusion_vq"  # type: ignore[assignment]
    decoder_depth: int = 0  # no ViT decoder: the UNet decodes
    cond_channels: int = Field(32, description="channels of the upsampled latent concatenated to the input")
    unet_channels: tuple[int, ...] = (128, 256, 256, 512)
    layers_per_block: int = 2
    norm_groups: int = 32
    train_timesteps: int = 1000
    sampling_steps: int = 25
    prediction_type: Literal["epsilon", "sample", "v_prediction"] = "sample"
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"
    zero_terminal_snr: bool = False
    # "diffusers": a diffusers UNet2DModel on the image with the upsampled latent concatenated (native);
    # "ml4m": the reference's ADM UNet on a unet_patch_size-patched image (models/unet_ml4m.py), conditioned
    # on the raw codes; unet_attention_rates = downsampling rates with self-attention.
    unet_decoder: Literal["diffusers", "ml4m"] = "diffusers"
    unet_patch_size: int = Field(1, gt=0)
    unet_attention_rates: tuple[int, ...] = ()


class MemcodesConfig(_Common):
    """Bottleneck MLP encoder -> Memcodes -> bottleneck MLP decoder for vectors (pose, global embeddings)."""

    architecture: Literal["mlp_memcodes"] = "mlp_memcodes"
    in_dim: int = Field(gt=0)
    n_tokens: int = Field(gt=0)
    width: int = 1024
    blocks: int = 6
    token_dim: int = 32
    gumbel_temperature: float = 1.0
    # Hidden width of each residual block = expansion x width (the reference's BottleneckMLP uses 4).
    expansion: int = Field(1, gt=0)


TokenizerConfig = Annotated[Union[VQVAEConfig, DiffusionVQConfig, MemcodesConfig], Field(discriminator="architecture")]
_ADAPTER: TypeAdapter = TypeAdapter(TokenizerConfig)


def parse_config(data: dict) -> VQVAEConfig | DiffusionVQConfig | MemcodesConfig:
    """A config dict (e.g. config.json) -> its typed config, by its ``architecture`` key."""
    from fourm_core.config import ConfigError
    from pydantic import ValidationError

    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as err:
        raise ConfigError(f"invalid tokenizer config: {err}") from None
