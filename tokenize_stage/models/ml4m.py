"""Loading apple/ml-4m's released tokenizers into our modules (their ``ml4m`` layout).

The release stores each tokenizer as ``model.safetensors`` + ``config.json`` written by huggingface_hub's
``PyTorchModelHubMixin`` (constructor kwargs: ``enc_type``, ``dec_type``, ``quant_type``, ``n_channels``,
``n_labels``, ``latent_dim``, ...) on the hub as ``EPFL-VILAB/4M_tokenizers_<id>``; older checkpoints are
``<id>.pth`` with ``ckpt['model']`` (state dict) and ``ckpt['args']`` (the training argparse Namespace).

``config_from_ml4m`` turns such a config (+ the weights' shapes, which fix the sizes the kwargs leave to
named presets) into our typed config; ``state_dict_from_ml4m`` renames the tensors by the table
``NAME_MAP`` (documented in docs/tokenizers.md). Every released tensor must be mapped and every tensor of
ours supplied, so ``load_state_dict(strict=True)`` proves the load is complete.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from .config import DiffusionVQConfig, MemcodesConfig, VQVAEConfig

# Our tokenizers serve 224x224 inputs (4M-21); the released ViTs were trained up to 448 and keep a 28x28 /
# 32x32 position table, which the ViT resizes bicubically to the 14x14 / 16x16 grid as the reference does.
TOKENIZE_RESOLUTION = 224

# Transformer heads of the reference's ViT presets (dims and depths are read from the weights).
# ``vit_tiny`` is the fixtures' small preset (shared/reference/ml4m-fixtures README).
VIT_HEADS = {"vit_s": 8, "vit_b": 12, "vit_l": 16, "vit_tiny": 2}

# (reference name pattern, our name) for VQVAE / DiVAE / MLP tokenizers; applied in order, first match wins.
NAME_MAP: list[tuple[str, str]] = [
    (r"encoder\.pos_emb", "encoder.vit.pos_emb"),
    (r"encoder\.proj\.(weight|bias)", r"encoder.proj.\1"),
    (r"encoder\.blocks\.(\d+)\.mlp\.fc1\.(.*)", r"encoder.vit.blocks.\1.mlp.0.\2"),
    (r"encoder\.blocks\.(\d+)\.mlp\.fc2\.(.*)", r"encoder.vit.blocks.\1.mlp.2.\2"),
    (r"encoder\.blocks\.(\d+)\.((norm1|norm2|attn)\..*)", r"encoder.vit.blocks.\1.\2"),
    (r"encoder\.norm_mlp\.(.*)", r"encoder.vit.norm_mlp.\1"),
    (r"(encoder|decoder)\.post_mlp\.fc1\.(.*)", r"\1{vit}.post_mlp.0.\2"),
    (r"(encoder|decoder)\.post_mlp\.fc2\.(.*)", r"\1{vit}.post_mlp.2.\2"),
    (r"decoder\.blocks\.(\d+)\.mlp\.fc1\.(.*)", r"decoder.blocks.\1.mlp.0.\2"),
    (r"decoder\.blocks\.(\d+)\.mlp\.fc2\.(.*)", r"decoder.blocks.\1.mlp.2.\2"),
    (r"decoder\.blocks\.(\d+)\.((norm1|norm2|attn)\..*)", r"decoder.blocks.\1.\2"),
    (r"decoder\.(pos_emb|norm_mlp\..*)", r"decoder.\1"),
    (r"decoder\.out_proj\.(.*)", r"head.\1"),
    (r"decoder\.out_conv\.(.*)", r"out_conv.\1"),
    # MLP tokenizers (BottleneckMLP): linear_in / blocks.N.block.{0,2} / layernorms.N / linear_out
    (r"(encoder|decoder)\.linear_in\.(.*)", r"\1.inp.\2"),
    (r"(encoder|decoder)\.linear_out\.(.*)", r"\1.out.1.\2"),
    (r"(encoder|decoder)\.blocks\.(\d+)\.block\.0\.(.*)", r"\1.blocks.\2.net.1.\3"),
    (r"(encoder|decoder)\.blocks\.(\d+)\.block\.2\.(.*)", r"\1.blocks.\2.net.3.\3"),
    (r"(encoder|decoder)\.layernorms\.(\d+)\.(.*)", r"\1.blocks.\2.net.0.\3"),
    # quantizers: lucid (cosine VQ, EMA codebook) and Memcodes
    (r"quant_proj\.(.*)", r"{quantizer_in}.\1"),
    (r"post_quant_proj\.(.*)", r"{quantizer_out}.\1"),
    (r"quantize\._codebook\.embed", "quantizer.embed"),
    (r"quantize\._codebook\.cluster_size", "quantizer.cluster_size"),
    (r"quantize\.(codes|to_k\.weight|to_v\.weight)", r"quantizer.\1"),
    (r"cls_emb\.weight", "cls_emb.weight"),
    # diffusion decoder: the UNet keeps the reference's module names
    (r"decoder\.(.*)", r"unet.\1"),
]
# Reference tensors with no counterpart: ``initted`` (k-means-init flag; must be 1 = initialised).
DROPPED = {"quantize._codebook.initted"}


class Ml4mFormatError(ValueError):
    """A released-format tokenizer that our modules cannot represent exactly."""


def is_ml4m_config(data: dict) -> bool:
    return "enc_type" in data and "architecture" not in data


def _blocks(shapes: dict[str, tuple[int, ...]], prefix: str) -> int:
    return len({k.split(".")[2] for k in shapes if k.startswith(prefix + ".blocks.")})


def guess_tokenizer(cfg: dict, hint: str = "") -> str:
    """Our tokenizer name for a released config; ``hint`` (hub id, folder name) breaks ties by its words."""
    h = hint.lower()
    n = cfg.get("n_channels")
    if "unet" in str(cfg.get("dec_type", "")) or "uvit" in str(cfg.get("dec_type", "")):
        for word, name in (("normal", "normal_diffusion"), ("edge", "edge_diffusion"), ("depth", "depth_diffusion"),
                           ("rgb", "rgb_diffusion")):
            if word in h:
                return name
        return "rgb_diffusion" if n == 3 else "depth_diffusion"
    if cfg.get("n_labels"):
        return "semseg_vqvae"
    if cfg.get("quant_type") == "memcodes":
        if n == 207 or "pose" in h:
            return "pose_vq"
        if "imagebind" in h or n == 1280:
            return "imagebind_global_memcodes"
        if "dinov2" in h or n == 768:
            return "dinov2_global_memcodes"
    else:
        if cfg.get("out_conv") or "sam" in h or (n == 1 and cfg.get("patch_proj")):
            return "mask_vq"
        for word, name in (("clip", "clip_vqvae"), ("imagebind", "imagebind_vqvae"), ("dinov2", "dinov2_vqvae")):
            if word in h:
                return name
        by_width = {512: "clip_vqvae", 768: "dinov2_vqvae", 1280: "imagebind_vqvae"}
        if n in by_width:
            return by_width[n]
    raise Ml4mFormatError(f"cannot tell which tokenizer {hint or 'this config'} is (n_channels={n}, "
                          f"quant_type={cfg.get('quant_type')}); pass tokenizer=<name> to from_pretrained")


def config_from_ml4m(cfg: dict, shapes: dict[str, tuple[int, ...]], tokenizer: str | None = None, hint: str = "",
                     ) -> VQVAEConfig | DiffusionVQConfig | MemcodesConfig:
    """A released config.json (+ its tensors' shapes) -> our typed config in the ml4m layout."""
    from ..registry import tokenizer_config  # registry imports models.config: import late

    name = tokenizer or guess_tokenizer(cfg, hint)
    base = tokenizer_config(name, "production")
    common = dict(name=name, profile="ml4m", modality=base.modality, target=base.target, layout="ml4m",
                  codebook_size=int(cfg["codebook_size"]))
    n_channels = int(cfg["n_channels"])
    if cfg.get("quant_type") == "memcodes":
        model, arch = str(cfg["enc_type"]).split("/")
        if model != "BottleneckMLP":
            raise Ml4mFormatError(f"enc_type {cfg['enc_type']!r}: only BottleneckMLP encoders are supported")
        parts = dict(p.split("_") for p in arch.split("-"))
        width = int(parts["Wi"])
        heads = int(cfg.get("num_codebooks", 1))
        latent = int(cfg["latent_dim"])
        if latent % heads:
            raise Ml4mFormatError(f"latent_dim {latent} is not divisible by num_codebooks {heads}")
        return MemcodesConfig(**common, in_dim=n_channels, n_tokens=heads, width=width, blocks=int(parts["B"]),
                              expansion=int(parts.get("Ex", 4)), token_dim=latent // heads)
    if cfg.get("quant_type", "lucid") != "lucid" or int(cfg.get("num_codebooks", 1)) != 1:
        raise Ml4mFormatError(f"quant_type {cfg.get('quant_type')!r} with num_codebooks "
                              f"{cfg.get('num_codebooks')}: only single-codebook 'lucid' VQ is supported")
    if not cfg.get("norm_codes", True):
        raise Ml4mFormatError("norm_codes=false (Euclidean codebook) is not supported: our VQ is cosine")
    enc = str(cfg["enc_type"])
    preset = enc.rsplit("_", 1)[0]
    if preset not in VIT_HEADS:
        raise Ml4mFormatError(f"enc_type {enc!r}: known ViT presets are {sorted(VIT_HEADS)}")
    dim = shapes["encoder.proj.weight"][0]
    patch_proj = bool(cfg.get("patch_proj", True))
    patch = int(cfg["patch_size"])
    side = min(int(cfg["image_size"]), TOKENIZE_RESOLUTION)
    vit = dict(dim=dim, heads=VIT_HEADS[preset], encoder_depth=_blocks(shapes, "encoder"),
               mlp_ratio=shapes["encoder.blocks.0.mlp.fc1.weight"][0] / dim, codebook_dim=int(cfg["latent_dim"]),
               pos_grid=shapes["encoder.pos_emb"][-1], post_mlp=bool(cfg.get("post_mlp", False)),
               ema_decay=float(cfg.get("ema_decay", 0.99)), commitment_weight=float(cfg.get("commitment_weight", 1.0)))
    if "unet" in str(cfg.get("dec_type", "")):
        from .unet_ml4m import unet_config_from_ml4m

        return DiffusionVQConfig(**common, **vit, in_channels=n_channels, out_channels=n_channels, image_size=side,
                                 patch_size=patch,
                                 **unet_config_from_ml4m(cfg, shapes))
    labels = cfg.get("n_labels")
    out_channels = int(labels) if labels else n_channels
    return VQVAEConfig(**common, **vit, decoder_depth=_blocks(shapes, "decoder"),
                       in_channels=int(labels) if labels else n_channels, out_channels=out_channels,
                       class_embed_dim=n_channels if labels else None,
                       image_size=side if patch_proj else side // patch, patch_size=patch if patch_proj else 1,
                       out_conv=bool(cfg.get("out_conv", False)))


def _rename(key: str, config: Any) -> str | None:
    vit = "" if key.startswith("decoder") else ".vit"
    mlp = config.architecture == "mlp_memcodes"
    fills = {"vit": vit, "quantizer_in": "quant_proj" if mlp else "quantizer.project_in",
             "quantizer_out": "post_quant_proj" if mlp else "quantizer.project_out"}
    for pattern, target in NAME_MAP:
        m = re.fullmatch(pattern, key)
        if m:
            if pattern.startswith(r"decoder\.(.*)") and config.architecture != "diffusion_vq":
                return None
            return m.expand(target.format(**fills))
    return None


def state_dict_from_ml4m(sd: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """Released tensors -> our names (``NAME_MAP``); 1x1 conv projections become linear weights; the EMA
    sum our VQ keeps is derived as embed x cluster_size. Raises on any tensor it cannot place."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in sd.items():
        if key in DROPPED:
            if not value.is_meta and not bool(value.reshape(-1)[0]):
                raise Ml4mFormatError("the checkpoint's codebook was never initialised (initted = 0)")
            continue
        ours = _rename(key, config)
        if ours is None:
            unknown.append(key)
            continue
        if key.split(".")[0] in ("quant_proj", "post_quant_proj") and value.ndim == 4:
            value = value.reshape(value.shape[0], value.shape[1])  # Conv2d 1x1 -> Linear
        out[ours] = value
    if unknown:
        raise Ml4mFormatError(f"{len(unknown)} released tensors have no place in our {config.architecture} "
                              f"modules: {unknown[:8]}")
    if "quantizer.embed" in out:
        out["quantizer.embed_sum"] = out["quantizer.embed"] * out["quantizer.cluster_size"].unsqueeze(1)
    return out


def load_pth(path: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """The older ``<id>.pth`` layout -> (config kwargs as the mixin would write them, state dict)."""
    from fourm_core.checkpoints import read_checkpoint

    ckpt = read_checkpoint(path, allow=[argparse.Namespace])
    if not isinstance(ckpt, dict) or "model" not in ckpt or "args" not in ckpt:
        raise Ml4mFormatError(f"{path}: expected a dict with 'model' and 'args' (apple/ml-4m tokenizer checkpoint)")
    args = dict(vars(ckpt["args"]))
    sd = ckpt["model"]
    domain = str(args.get("domain", ""))
    cfg = dict(args)
    cfg["image_size"] = args.get("input_size") or args.get("input_size_max") or args.get("image_size")
    if any(w in domain for w in ("CLIP", "DINO", "ImageBind")):
        cfg["patch_proj"] = False
    elif "sam" in domain and "mask_size" in args:
        cfg["image_size"] = args["mask_size"]  # the reference's renaming: masks are mask_size²
    cfg["quant_type"] = args.get("quantizer_type", args.get("quant_type"))
    cfg["enc_type"] = args.get("encoder_type", args.get("enc_type"))
    cfg["dec_type"] = args.get("decoder_type", args.get("dec_type"))
    if args.get("quantizer_ema_decay") is not None:
        cfg["ema_decay"] = args["quantizer_ema_decay"]
    if "cls_emb.weight" in sd:
        cfg["n_labels"], cfg["n_channels"] = sd["cls_emb.weight"].shape
    elif "encoder.linear_in.weight" in sd:
        cfg["n_channels"] = sd["encoder.linear_in.weight"].shape[1]
    else:
        cfg["n_channels"] = sd["encoder.proj.weight"].shape[1]
    return cfg, sd


# ------------------------------------------------------------------------------------------ export
# Our name -> the released one: the inverse of NAME_MAP (checked against it key by key on export).
_INVERSE: list[tuple[str, str | None]] = [
    (r"encoder\.vit\.pos_emb", "encoder.pos_emb"),
    (r"(encoder|decoder)\.(?:vit\.)?blocks\.(\d+)\.mlp\.0\.(.*)", r"\1.blocks.\2.mlp.fc1.\3"),
    (r"(encoder|decoder)\.(?:vit\.)?blocks\.(\d+)\.mlp\.2\.(.*)", r"\1.blocks.\2.mlp.fc2.\3"),
    (r"encoder\.vit\.blocks\.(\d+)\.(.*)", r"encoder.blocks.\1.\2"),
    (r"encoder\.vit\.norm_mlp\.(.*)", r"encoder.norm_mlp.\1"),
    (r"(encoder|decoder)\.(?:vit\.)?post_mlp\.0\.(.*)", r"\1.post_mlp.fc1.\2"),
    (r"(encoder|decoder)\.(?:vit\.)?post_mlp\.2\.(.*)", r"\1.post_mlp.fc2.\2"),
    (r"(encoder|decoder)\.inp\.(.*)", r"\1.linear_in.\2"),
    (r"(encoder|decoder)\.out\.1\.(.*)", r"\1.linear_out.\2"),
    (r"(encoder|decoder)\.blocks\.(\d+)\.net\.1\.(.*)", r"\1.blocks.\2.block.0.\3"),
    (r"(encoder|decoder)\.blocks\.(\d+)\.net\.3\.(.*)", r"\1.blocks.\2.block.2.\3"),
    (r"(encoder|decoder)\.blocks\.(\d+)\.net\.0\.(.*)", r"\1.layernorms.\2.\3"),
    (r"head\.(.*)", r"decoder.out_proj.\1"),
    (r"out_conv\.(.*)", r"decoder.out_conv.\1"),
    (r"quantizer\.project_in\.(.*)", r"quant_proj.\1"),
    (r"quantizer\.project_out\.(.*)", r"post_quant_proj.\1"),
    (r"quantizer\.embed", "quantize._codebook.embed"),
    (r"quantizer\.cluster_size", "quantize._codebook.cluster_size"),
    (r"quantizer\.embed_sum", None),  # derived on load
    (r"quantizer\.(codes|to_k\.weight|to_v\.weight)", r"quantize.\1"),
    (r"unet\.(.*)", r"decoder.\1"),
]


def state_dict_to_ml4m(sd: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """Our tensors of an ml4m-layout tokenizer -> the released names and shapes (what the reference code and
    ``state_dict_from_ml4m`` read). Every name is checked to map back to itself."""
    if config.layout != "ml4m":
        raise Ml4mFormatError(f"{config.name} is in our native layout; only the ml4m layout has a released format")
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        ref = key
        for pattern, target in _INVERSE:
            m = re.fullmatch(pattern, key)
            if m:
                ref = None if target is None else m.expand(target)
                break
        if ref is None:
            continue
        if _rename(ref, config) != key:
            raise Ml4mFormatError(f"{key} has no released name ({ref!r} maps back to {_rename(ref, config)!r})")
        if ref.split(".")[0] in ("quant_proj", "post_quant_proj") and ref.endswith("weight") and value.ndim == 2:
            value = value.reshape(*value.shape, 1, 1)  # Linear -> Conv2d 1x1
        out[ref] = value
    if "quantize._codebook.embed" in out:
        out["quantize._codebook.initted"] = torch.ones(1, device=out["quantize._codebook.embed"].device)
    return out


def config_to_ml4m(config: Any) -> dict:
    """Our ml4m-layout config -> the constructor kwargs the reference's ``PyTorchModelHubMixin`` records."""
    from fourm_core.modalities import MODALITIES

    common = dict(codebook_size=config.codebook_size, norm_codes=True, norm_latents=False, sync_codebook=False,
                  kmeans_init=False, code_replacement_policy="batch_random", undo_std=False)
    if config.architecture == "mlp_memcodes":
        mlp = f"BottleneckMLP/B_{config.blocks}-Wi_{config.width}" + (
            f"-Ex_{config.expansion}" if config.expansion != 4 else "")
        return dict(common, image_size=224, image_size_dec=None, n_channels=config.in_dim, n_labels=None,
                    enc_type=mlp, dec_type=mlp, post_mlp=False, patch_proj=False, patch_size_dec=None,
                    patch_size=16 if config.target == "pose" else 14,  # unused by MLPs; the released values
                    quant_type="memcodes", num_codebooks=config.n_tokens,
                    latent_dim=config.n_tokens * config.token_dim, out_conv=False, commitment_weight=1.0,
                    ema_decay=0.99)
    preset = {h: p for p, h in VIT_HEADS.items()}.get(config.heads)
    if preset is None:
        raise Ml4mFormatError(f"{config.heads} heads match no reference ViT preset ({VIT_HEADS})")
    features = config.target == "features"
    # feature maps: the reference keeps the labeler's patch size and sizes the position table in pixels
    patch = MODALITIES[config.modality].patch_size if features else config.patch_size
    side = config.pos_grid or config.grid[0]
    out = dict(common, image_size=side * patch, n_channels=config.class_embed_dim or config.in_channels,
               enc_type=f"{preset}_enc", post_mlp=config.post_mlp, patch_size=patch, quant_type="lucid",
               latent_dim=config.codebook_dim, commitment_weight=config.commitment_weight, ema_decay=config.ema_decay)
    if config.architecture == "diffusion_vq":
        out = dict(out, dec_type="unet_patched", patch_size_dec=config.unet_patch_size,
                   num_train_timesteps=config.train_timesteps, prediction_type=config.prediction_type,
                   beta_schedule=config.beta_schedule, zero_terminal_snr=config.zero_terminal_snr)
        ch = list(config.unet_channels)
        preset = (ch == [ch[0] * m for m in (1, 2, 2, 2)] and config.layers_per_block == 3
                  and config.norm_groups == 32 and tuple(config.unet_attention_rates) == (4, 8))
        if not preset:  # our extension (read back by unet_config_from_ml4m); the reference cannot build these
            out["unet"] = {"channels": ch, "res_blocks": config.layers_per_block, "groups": config.norm_groups,
                           "attention_rates": list(config.unet_attention_rates)}
        return out
    return dict(out, dec_type=f"{preset}_dec", image_size_dec=None, patch_size_dec=None, num_codebooks=1,
                n_labels=config.in_channels if config.class_embed_dim else None, patch_proj=not features,
                out_conv=config.out_conv)


def save_ml4m(model: Any, directory: str | os.PathLike) -> Path:
    """Write an ml4m-layout tokenizer as the release does: ``config.json`` (sorted, indent 2) + ``model.safetensors``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = state_dict_to_ml4m(model.state_dict_for_save(), model.config)
    save_file(tensors, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config_to_ml4m(model.config), sort_keys=True, indent=2))
    return directory
