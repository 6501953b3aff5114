"""Omnidata v2 DPT-Hybrid (depth and surface normals) in transformers' DPT-hybrid layout.

Omnidata's ``DPTDepthModel(backbone="vitb_rn50_384")`` is the MiDaS/DPT code base: timm's hybrid ViT-B/16 on a
ResNet-50 (BiT) stem under ``pretrained.model``, the reassemble blocks under ``pretrained.act_postprocess{1..4}``,
the fusion decoder under ``scratch``. transformers' ``DPTForDepthEstimation`` with ``is_hybrid=True`` is the same
network under other names; :func:`convert_state_dict` renames a released checkpoint's state dict onto it (and splits
timm's fused qkv projection), :func:`convert_checkpoint` writes a labeler model directory (``python -m pseudolabel
convert-omnidata``). The normal model differs only in its last 1×1 conv (3 output channels).

Input handling follows Omnidata's demo: the image is resized (bilinear) so its shorter side is the network size S,
then centre-cropped to S×S; depth inputs are normalised with mean = std = 0.5, normal inputs are plain [0, 1]
pixels. A non-square image is covered by ⌊long/short⌋ + 1 such S×S windows spaced evenly along its long side
(the middle one is the centre crop); their predictions are blended back into one map (depth windows are first
aligned to each other by least-squares scale and shift on their overlaps, since Omnidata depth is relative).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

DEPTH_MEAN = DEPTH_STD = (0.5, 0.5, 0.5)
# Omnidata's normal model takes plain [0, 1] pixels (its demo's transform is ToTensor only).
NORMAL_MEAN, NORMAL_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)

# Omnidata v2 DPT-B-Hybrid = transformers' DPT-hybrid (Intel/dpt-hybrid-midas) at 384².
FULL = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
            backbone_out_indices=[2, 5, 8, 11], neck_hidden_sizes=[256, 512, 768, 768], fusion_hidden_size=256,
            image_size=384, backbone_featmap_shape=[1, 1024, 24, 24],
            backbone=dict(depths=[3, 4, 9], hidden_sizes=[256, 512, 1024, 2048], embedding_size=64))
# The same network small: one bottleneck per BiT stage (channels stay multiples of BiT's 32 norm groups), a 2-layer
# 32-d ViT, 224² input.
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            backbone_out_indices=[0, 0, 0, 1], neck_hidden_sizes=[128, 128, 32, 32], fusion_hidden_size=16,
            image_size=224, backbone_featmap_shape=[1, 128, 14, 14],
            backbone=dict(depths=[1, 1, 1], hidden_sizes=[128, 128, 128, 128], embedding_size=32))
PROFILES = {"full": FULL, "tiny": TINY}


def dpt_hybrid_config(profile: dict):
    """transformers ``DPTConfig`` of a DPT-hybrid at ``profile`` (``FULL`` or ``TINY``)."""
    from transformers import DPTConfig

    p = dict(profile)
    backbone = p.pop("backbone")
    return DPTConfig(is_hybrid=True, readout_type="project", reassemble_factors=[1, 1, 1, 0.5],
                     use_batch_norm_in_fusion_residual=False, layer_norm_eps=1e-6, **p,
                     backbone_config=dict(global_padding="same", layer_type="bottleneck", embedding_dynamic_padding=True,
                                          out_features=["stage1", "stage2", "stage3"], **backbone))


def surface_normals_class():
    """transformers' DPTForDepthEstimation with Omnidata's 3-channel normal head (the class is built on call:
    importing this module imports no transformers)."""
    from torch import nn
    from transformers import DPTForDepthEstimation

    class DPTForSurfaceNormals(DPTForDepthEstimation):
        """DPTForDepthEstimation with a 3-channel head (Omnidata's normal model layout)."""

        def __init__(self, config):
            super().__init__(config)
            self.head.head[4] = nn.Conv2d(32, 3, kernel_size=1, stride=1, padding=0)
            self.post_init()

    return DPTForSurfaceNormals


def build(task: str, profile: dict):
    """An untrained Omnidata-layout model: ``task`` "depth" (1 channel) or "normal" (3 channels)."""
    from transformers import DPTForDepthEstimation

    cls = DPTForDepthEstimation if task == "depth" else surface_normals_class()
    return cls(dpt_hybrid_config(profile))


# ------------------------------------------------------------------------------------------- state-dict names

# Prefix maps applied in order (first match wins) to the key after ``model.`` (Lightning) is stripped.
_FUSION = {"refinenet4": 0, "refinenet3": 1, "refinenet2": 2, "refinenet1": 3}  # MiDaS fuses deepest first


def _bit_name(rest: str) -> str:
    """timm ResNetV2 names under ``patch_embed.backbone.`` -> transformers BiT names."""
    if rest.startswith("stem.conv."):
        return "bit.embedder.convolution." + rest.removeprefix("stem.conv.")
    if rest.startswith("stem.norm."):
        return "bit.embedder.norm." + rest.removeprefix("stem.norm.")
    if rest.startswith("stages."):
        _, stage, _, block, tail = rest.split(".", 4)  # stages.<i>.blocks.<j>.<param>
        return f"bit.encoder.stages.{stage}.layers.{block}.{tail}"
    raise KeyError(rest)


def _vit_block_name(i: str, rest: str) -> str:
    names = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.output.dense",
             "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense", "attn.qkv": "attention.attention.qkv"}
    module, param = rest.rsplit(".", 1)
    return f"dpt.encoder.layer.{i}.{names[module]}.{param}"


def _fusion_name(rest: str) -> str:
    block, tail = rest.split(".", 1)
    module, param = tail.rsplit(".", 1)
    module = (module.replace("resConfUnit1", "residual_layer1").replace("resConfUnit2", "residual_layer2")
              .replace("conv1", "convolution1").replace("conv2", "convolution2").replace("out_conv", "projection"))
    return f"neck.fusion_stage.layers.{_FUSION[block]}.{module}.{param}"


def released_to_ours(name: str) -> str | None:
    """The transformers name of one Omnidata/MiDaS DPT-hybrid parameter (None: not used, e.g. timm's classifier)."""
    name = name.removeprefix("model.")  # Lightning's module attribute
    if name.startswith("pretrained.model."):
        rest = name.removeprefix("pretrained.model.")
        if rest.startswith("head."):
            return None  # timm's ImageNet classifier, unused by DPT
        if rest in ("cls_token", "pos_embed"):
            return {"cls_token": "dpt.embeddings.cls_token", "pos_embed": "dpt.embeddings.position_embeddings"}[rest]
        if rest.startswith("patch_embed.proj."):
            return "dpt.embeddings.projection." + rest.removeprefix("patch_embed.proj.")
        if rest.startswith("patch_embed.backbone."):
            return "dpt.embeddings.backbone." + _bit_name(rest.removeprefix("patch_embed.backbone."))
        if rest.startswith("blocks."):
            _, i, tail = rest.split(".", 2)
            return _vit_block_name(i, tail)
        if rest.startswith("norm."):
            return "dpt.layernorm." + rest.removeprefix("norm.")
    if name.startswith("pretrained.act_postprocess"):
        stage = int(name[len("pretrained.act_postprocess")]) - 1
        idx, param = name.split(".")[2], name.rsplit(".", 1)[1]
        if idx == "0":  # ProjectReadout: Sequential(Linear, GELU) at index 0 of the block
            return f"neck.reassemble_stage.readout_projects.{stage}.0.{param}"
        return f"neck.reassemble_stage.layers.{stage}.{ {'3': 'projection', '4': 'resize'}[idx] }.{param}"
    if name.startswith("scratch.layer") and "_rn." in name:
        i = int(name[len("scratch.layer")]) - 1
        return f"neck.convs.{i}.{name.rsplit('.', 1)[1]}"
    if name.startswith("scratch.refinenet"):
        return _fusion_name(name.removeprefix("scratch."))
    if name.startswith("scratch.output_conv."):
        return "head.head." + name.removeprefix("scratch.output_conv.")
    raise KeyError(f"unknown Omnidata/DPT parameter name {name!r}")


def convert_state_dict(state: dict) -> dict:
    """Released (MiDaS-layout) state dict -> transformers DPT-hybrid state dict; timm's fused qkv is split."""
    out = {}
    for k, v in state.items():
        ours = released_to_ours(k)
        if ours is None:
            continue
        if ".attention.attention.qkv." in ours:
            q, kk, vv = v.chunk(3, dim=0)
            for part, t in zip(("query", "key", "value"), (q, kk, vv)):
                out[ours.replace(".qkv.", f".{part}.")] = t.contiguous()
        else:
            out[ours] = v
    return out


def read_checkpoint(path: str | Path) -> dict:
    """The state dict of a released Omnidata ``.ckpt`` / ``.pth`` (``torch.load(weights_only=True)``, with
    argparse.Namespace allowed: Lightning stores hyper-parameters as one) or of a ``.safetensors`` file."""
    from fourm_core.checkpoints import read_state_dict

    return read_state_dict(path, allow=[argparse.Namespace], fix=(
        "re-save its state dict once, in an environment you trust: safetensors.torch.save_file(torch.load(ckpt, "
        "weights_only=False)['state_dict'], 'omnidata.safetensors'), and pass the .safetensors file"))


def convert_checkpoint(checkpoint: str | Path, out: str | Path, task: str, profile: dict = FULL) -> Path:
    """Released Omnidata checkpoint -> a depth / normals labeler model directory (safetensors + config), loaded
    strictly (every parameter of ours comes from the checkpoint, nothing in it is left over but timm's classifier)."""
    if task not in ("depth", "normal"):
        raise ValueError(f"task must be 'depth' or 'normal', got {task!r}")
    state = convert_state_dict(read_checkpoint(checkpoint))
    model = build(task, profile)
    model.load_state_dict(state, strict=True)
    out = Path(out)
    model.save_pretrained(out, safe_serialization=True)
    (out / "omnidata.json").write_text(json.dumps({"task": task, "source": str(checkpoint)}, indent=2))
    return out


# ------------------------------------------------------------------------------------------ windows

def window_offsets(long: int, size: int) -> list[int]:
    """Start offsets of the S×S windows covering a side of length ``long`` ≥ ``size`` (one if equal): ⌊long/size⌋+1
    evenly spaced windows, so neighbours always overlap and the middle one of an odd count is the centre crop."""
    if long <= size:
        return [0]
    n = long // size + 1
    return [round(i * (long - size) / (n - 1)) for i in range(n)]


def to_windows(rgb: np.ndarray, size: int) -> tuple[list[np.ndarray], tuple[int, int], list[int], bool]:
    """uint8 H×W×3 -> (S×S×3 windows, resized (h, w), offsets along the long side, long side is the width)."""
    import cv2

    h, w = rgb.shape[:2]
    scale = size / min(h, w)
    rh, rw = max(size, round(h * scale)), max(size, round(w * scale))
    resized = cv2.resize(rgb, (rw, rh), interpolation=cv2.INTER_LINEAR)
    wide = rw >= rh
    offsets = window_offsets(rw if wide else rh, size)
    wins = [resized[:, o:o + size] if wide else resized[o:o + size] for o in offsets]
    return wins, (rh, rw), offsets, wide


def blend(preds: list[np.ndarray], shape: tuple[int, int], offsets: list[int], wide: bool,
          align: bool) -> np.ndarray:
    """Window predictions C×S×S -> one C×h×w map (mean over overlaps). ``align``: fit each window's scale and shift
    to the map built so far on their overlap (least squares over all channels) before adding it."""
    c, s = preds[0].shape[0], preds[0].shape[-1]
    acc = np.zeros((c, *shape), np.float64)
    cnt = np.zeros(shape, np.float64)
    for p, o in zip(preds, offsets):
        sl = (slice(None), slice(o, o + s)) if wide else (slice(o, o + s), slice(None))
        p = p.astype(np.float64)
        seen = cnt[sl] > 0
        if align and seen.any():
            target = acc[(slice(None), *sl)][:, seen] / cnt[sl][seen]
            a = np.stack([p[:, seen].ravel(), np.ones(target.size)], axis=1)
            (scale, shift), *_ = np.linalg.lstsq(a, target.ravel(), rcond=None)
            p = p * scale + shift
        acc[(slice(None), *sl)] += p
        cnt[sl] += 1
    return (acc / cnt).astype(np.float32)
