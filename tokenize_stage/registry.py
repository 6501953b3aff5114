"""Tokenizer configs per (tokenizer name, profile), derived from the modality registry.

Tokenizer names, vocabularies, grids, patch sizes and channels come from ``fourm_core.modalities``;
nothing here lists modalities by hand. Two tokenizers sit inside sequence modalities (4M-FACTS §1:
``wordpiece+pose_vq``, ``wordpiece+mask_vq``); their shapes are the papers' numbers below.

Profiles: ``production`` = ViT-B sized (dim 768, 12+12 layers) / MLP width 1024 x 6 blocks, grids and
vocabularies from the registry; ``tiny`` = the same architectures a few hundred kB large, for tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from fourm_core.modalities import MODALITIES, Modality, ModalityKind

from .models.config import DiffusionVQConfig, Layout, MemcodesConfig, Target, VQVAEConfig

PROFILES = ("production", "tiny")
# Modality kinds whose tokens a learned tokenizer of this registry makes (image grids and global tokens).
TOKEN_KINDS = (ModalityKind.IMAGE_TOKENS, ModalityKind.GLOBAL_TOKENS)

# Tokenizers embedded in sequence modalities (4M-FACTS §1): pose VQ 207-d -> 8 tokens, 1k codes;
# SAM mask VQ 64x64 binary -> 16 tokens, 1k codes.
POSE_DIM, POSE_TOKENS, POSE_VOCAB = 207, 8, 1024
MASK_SIZE, MASK_TOKENS, MASK_VOCAB = 64, 16, 1024
N_SEMSEG_CLASSES = 134  # 133 COCO-panoptic classes + "none" (id 0)

# Pseudo-label -> what its tokenizer reconstructs (picks normalisation, loss, metric).
_LABEL_TARGET: dict[str, Target] = {"images": "rgb", "depth": "depth", "normal": "normal", "semseg": "semseg",
                                    "canny_edge": "edge", "sam_edge": "edge"}


@dataclass(frozen=True)
class TokenizerSpec:
    """A tokenizer as the registry defines it: which modalities and labels it serves."""

    name: str
    modalities: tuple[str, ...]
    labels: tuple[str, ...]  # pseudo-label artifacts' label names (labels/<label>) it trains on/encodes

    @property
    def modality(self) -> Modality:
        return MODALITIES[self.modalities[0]]


def sub_tokenizer(tokenizer: str) -> str:
    """'wordpiece+pose_vq' -> 'pose_vq'; plain names unchanged."""
    return tokenizer.split("+", 1)[1] if "+" in tokenizer else tokenizer


def tokenizer_specs() -> dict[str, TokenizerSpec]:
    """Every learned tokenizer named in the modality registry (WordPiece excluded: tokenize_stage.text)."""
    specs: dict[str, tuple[list[str], list[str]]] = {}
    for m in MODALITIES.values():
        if not m.tokenizer or m.tokenizer == "wordpiece":
            continue
        name = sub_tokenizer(m.tokenizer)
        mods, labels = specs.setdefault(name, ([], []))
        mods.append(m.name)
        if m.label not in labels:
            labels.append(m.label)
    return {n: TokenizerSpec(n, tuple(mods), tuple(labels)) for n, (mods, labels) in specs.items()}


def tokenizer_names() -> list[str]:
    return sorted(tokenizer_specs())


def _target(spec: TokenizerSpec) -> Target:
    m = spec.modality
    if spec.name == "pose_vq":
        return "pose"
    if spec.name == "mask_vq":
        return "mask"
    if m.kind is ModalityKind.GLOBAL_TOKENS:
        return "global"
    if m.label in _LABEL_TARGET:
        return _LABEL_TARGET[m.label]
    if m.feature_dim:
        return "features"
    raise KeyError(f"no reconstruction target known for tokenizer {spec.name} (label {m.label})")


def tokenizer_config(name: str, profile: str = "production", layout: Layout = "native",
                     ) -> VQVAEConfig | DiffusionVQConfig | MemcodesConfig:
    """The typed config of tokenizer ``name`` in ``profile`` ('production' or 'tiny') and module ``layout``
    ('native', or 'ml4m' = the architecture of apple/ml-4m's released tokenizers, see ``_ml4m``)."""
    config = _native_config(name, profile)
    return _ml4m(config, profile == "tiny") if layout == "ml4m" else config


def _ml4m(config, tiny: bool):
    """The ml4m-layout variant of a native config, with the reference's per-tokenizer options: semseg
    class embedding (64-d), Tanh post-MLP (not for masks), ConvNeXt output blocks for masks (1024-d codes),
    the patched ADM UNet for diffusion decoders (linear betas, zero terminal SNR), 4x MLP blocks."""
    update: dict = {"layout": "ml4m"}
    if isinstance(config, MemcodesConfig):
        update["expansion"] = 4
        return config.model_copy(update=update)
    update["pos_grid"] = config.grid[0]
    if tiny:  # the reference fixtures' tiny ViT preset ("vit_tiny", 2 heads), so tiny exports name a preset
        update["heads"] = 2
    if config.target == "semseg":
        update["class_embed_dim"] = 8 if tiny else 64
    if config.target == "mask":
        update.update(out_conv=True, codebook_dim=config.codebook_dim if tiny else 1024)
    else:
        update["post_mlp"] = True
    if isinstance(config, DiffusionVQConfig):
        update.update(unet_decoder="ml4m", cond_channels=config.codebook_dim, zero_terminal_snr=True,
                      **(dict(unet_patch_size=2, unet_channels=(16, 32), layers_per_block=1, norm_groups=8,
                              unet_attention_rates=(2,)) if tiny else
                         dict(unet_patch_size=4, unet_channels=(256, 512, 512, 512), layers_per_block=3,
                              norm_groups=32, unet_attention_rates=(4, 8))))
    return config.model_copy(update=update)


def _native_config(name: str, profile: str) -> VQVAEConfig | DiffusionVQConfig | MemcodesConfig:
    specs = tokenizer_specs()
    if name not in specs:
        raise KeyError(f"unknown tokenizer {name!r}; known: {', '.join(sorted(specs))}")
    if profile not in PROFILES:
        raise KeyError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    spec, tiny = specs[name], profile == "tiny"
    m, target = spec.modality, _target(spec)
    common = dict(name=name, profile=profile, modality=m.name, target=target)
    vit = dict(dim=64, encoder_depth=2, decoder_depth=2, heads=4, codebook_dim=16) if tiny else {}

    if target in ("pose", "global"):
        in_dim = POSE_DIM if target == "pose" else m.feature_dim
        n_tokens = POSE_TOKENS if target == "pose" else m.max_tokens
        vocab = POSE_VOCAB if target == "pose" else m.vocab_size
        size = dict(width=128, blocks=2, token_dim=16, codebook_size=256) if tiny else dict(codebook_size=vocab)
        return MemcodesConfig(**common, in_dim=in_dim, n_tokens=n_tokens, **size)

    if target == "mask":  # 16-pixel patches: 64x64 -> 4x4 = 16 tokens in both profiles
        return VQVAEConfig(**common, in_channels=1, out_channels=1, image_size=MASK_SIZE,
                           patch_size=MASK_SIZE // int(MASK_TOKENS ** 0.5),
                           codebook_size=256 if tiny else MASK_VOCAB, **vit)

    rows, _ = m.grid
    if target == "features":  # the feature map *is* the token grid: 1x1 projection per position
        # Tiny keeps the real channel count but an 8x8 grid.
        return VQVAEConfig(**common, in_channels=m.feature_dim, out_channels=m.feature_dim,
                           image_size=8 if tiny else rows,
                           patch_size=1, codebook_size=256 if tiny else m.vocab_size, **vit)

    # Pixel-space inputs. Tiny: 32x32 semantic maps with 8-pixel patches, 16x16 diffusion images with
    # 4-pixel patches (4x4 token grids): small enough to train for real in CI on a shared CPU.
    diffusion = target != "semseg"
    image_size = (16 if diffusion else 32) if tiny else rows * m.patch_size
    patch = (4 if diffusion else 8) if tiny else m.patch_size
    if target == "semseg":
        return VQVAEConfig(**common, in_channels=N_SEMSEG_CLASSES, out_channels=N_SEMSEG_CLASSES,
                           image_size=image_size, patch_size=patch, codebook_size=256 if tiny else m.vocab_size,
                           **vit)
    channels = 3 if target in ("rgb", "normal") else 1
    unet = (dict(unet_channels=(32, 64), layers_per_block=1, norm_groups=8, cond_channels=16, sampling_steps=5)
            if tiny else {})
    vit_enc = {k: v for k, v in vit.items() if k != "decoder_depth"}
    return DiffusionVQConfig(**common, in_channels=channels, out_channels=channels, image_size=image_size,
                             patch_size=patch, codebook_size=256 if tiny else m.vocab_size, **vit_enc, **unet)
