"""ImageBind-H/14 image patch features (16×16×1280 at 224²) and global feature (1280):
tok_imagebind@224 and tok_imagebind_global.

The vision trunk is an OpenCLIP-style ViT-H/14 (pre-LN before the blocks, LayerNorm eps 1e-6, no patch
bias), built with timm's ``VisionTransformer``; the head is LayerNorm -> CLS -> Linear(1280, 1024, no
bias) and the embedding is L2-normalised (ImageBind's vision postprocessor). As in apple/ml-4m, whose
released tokenizers were trained on exactly these: ``features`` = the last layer's patch tokens after the
head LayerNorm, ``imagebind_global`` = token 0 of that same 1280-d output (not the 1024-d projected,
normalised embedding); inputs are ImageNet-normalised (the reference's tokenizer data pipeline).
Real ImageBind weights (``imagebind_huge.pth``) load after conversion to safetensors with
:func:`convert_imagebind_state_dict` (key mapping below), saved as ``model.safetensors`` beside a ``config.json`` (``{"embed_dim": 1280, "depth": 32, ...}``).
Licence of the released weights: CC-BY-NC-4.0 (ImageBind).
"""

from __future__ import annotations

import json
import os
from typing import ClassVar

import pyarrow as pa

from ..spec import RGB, Batch
from .model_base import IMAGENET_MEAN, IMAGENET_STD, HFModelSettings, ModelLabeler, f16_bytes, host_f16, resize_batch

FULL = {"embed_dim": 1280, "depth": 32, "num_heads": 16, "mlp_ratio": 4.0, "patch_size": 14, "img_size": 224,
        "out_dim": 1024}
TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0, "patch_size": 14, "img_size": 224,
        "out_dim": 16}


def build_vit(cfg: dict):
    """timm ViT in ImageBind's vision layout (the conv stem has no bias; head has no bias)."""
    from functools import partial

    import torch.nn as nn
    from timm.models.vision_transformer import VisionTransformer

    m = VisionTransformer(img_size=cfg["img_size"], patch_size=cfg["patch_size"], embed_dim=cfg["embed_dim"],
                          depth=cfg["depth"], num_heads=cfg["num_heads"], mlp_ratio=cfg["mlp_ratio"], qkv_bias=True,
                          pre_norm=True, num_classes=cfg["out_dim"], global_pool="token",
                          norm_layer=partial(nn.LayerNorm, eps=1e-6))
    m.patch_embed.proj = nn.Conv2d(3, cfg["embed_dim"], cfg["patch_size"], cfg["patch_size"], bias=False)
    m.head = nn.Linear(cfg["embed_dim"], cfg["out_dim"], bias=False)
    m.imagebind_config = dict(cfg)
    return m


def convert_imagebind_state_dict(sd: dict) -> dict:
    """Map ImageBind's (``imagebind_huge.pth``) vision keys to the timm layout of :func:`build_vit`.

    rgbt_stem is a Conv3d with kernel (2, 14, 14) on the image repeated to 2 frames (PadIm2Video), which
    equals a Conv2d whose weight is the sum over the time axis. Blocks use nn.MultiheadAttention, whose
    fused ``in_proj`` has timm's q, k, v order.
    """
    pre = "modality_preprocessors.vision."
    trunk = "modality_trunks.vision."
    head = "modality_heads.vision."
    out = {
        "patch_embed.proj.weight": sd[pre + "rgbt_stem.proj.1.weight"].sum(dim=2),
        "cls_token": sd[pre + "cls_token"],
        "pos_embed": sd[pre + "pos_embedding_helper.pos_embed"],
        "norm_pre.weight": sd[trunk + "pre_transformer_layer.0.weight"],
        "norm_pre.bias": sd[trunk + "pre_transformer_layer.0.bias"],
        "norm.weight": sd[head + "0.weight"],
        "norm.bias": sd[head + "0.bias"],
        "head.weight": sd[head + "2.weight"],
    }
    i = 0
    while f"{trunk}blocks.{i}.norm_1.weight" in sd:
        b, t = f"{trunk}blocks.{i}.", f"blocks.{i}."
        for a, c in (("norm_1", "norm1"), ("norm_2", "norm2"), ("attn.in_proj", "attn.qkv"),
                     ("attn.out_proj", "attn.proj"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            for p in ("weight", "bias"):
                key = f"{b}{a}_{p}" if a == "attn.in_proj" else f"{b}{a}.{p}"
                out[f"{t}{c}.{p}"] = sd[key]
        i += 1
    return out


class ImageBindSettings(HFModelSettings):
    model: str = "./models/imagebind_huge"  # a local dir converted with convert_imagebind_state_dict (docs/labelers.md)


class ImageBindLabeler(ModelLabeler):
    name: ClassVar[str] = "imagebind"
    supports_autocast: ClassVar[bool] = True  # the forward runs in self.inference()
    outputs: ClassVar[tuple[str, ...]] = ("imagebind_features", "imagebind_global")
    needs: ClassVar[tuple[str, ...]] = (RGB,)
    code_version: ClassVar[str] = "2"  # 2: ImageNet mean/std; global = 1280-d token 0
    Settings: ClassVar[type[HFModelSettings]] = ImageBindSettings
    default_batch_size: ClassVar[int] = 4
    heavy_output: ClassVar[bool] = True

    def build_tiny(self):
        return build_vit(TINY)

    def build_full(self):
        return build_vit(FULL)

    def load_dir(self, path: str):
        from fourm_core.checkpoints import read_state_dict

        with open(os.path.join(path, "config.json")) as f:
            cfg = json.load(f)
        m = build_vit(cfg)
        sd = read_state_dict(os.path.join(path, "model.safetensors"))
        if any(k.startswith("modality_") for k in sd):  # raw ImageBind keys: map them
            sd = convert_imagebind_state_dict(sd)
        m.load_state_dict(sd, strict=True)
        return m

    def save(self, model, path: str) -> None:
        from safetensors.torch import save_file

        os.makedirs(path, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(path, "model.safetensors"))
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(model.imagebind_config, f)

    def _cfg(self) -> dict:
        if self.model is not None:
            return self.model.imagebind_config
        r = self.resolved()
        if r.is_tiny:
            return TINY
        with open(os.path.join(r.local_dir, "config.json")) as f:
            return json.load(f)

    def schema(self) -> dict[str, pa.Schema]:
        c = self._cfg()
        g = c["img_size"] // c["patch_size"]
        return {"imagebind_features": pa.schema([("features", pa.binary(g * g * c["embed_dim"] * 2))]),
                "imagebind_global": pa.schema([("embedding", pa.binary(c["embed_dim"] * 2))])}

    def label_batch(self, batch: Batch) -> list:
        x = resize_batch(batch.rgb, self._cfg()["img_size"], IMAGENET_MEAN, IMAGENET_STD, self.device)
        with self.inference():
            tokens = host_f16(self.model.forward_features(x))  # B × (1 + g²) × 1280, after the head LayerNorm
        return [{"imagebind_features": {"features": f16_bytes(tokens[i, 1:])},
                 "imagebind_global": {"embedding": f16_bytes(tokens[i, 0])}} for i in range(len(batch))]
