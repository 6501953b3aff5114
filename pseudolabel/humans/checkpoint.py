"""Weights I/O of the pose model: our safetensors format, and the released HMR2.0 checkpoint.

HMR2.0 (4D-Humans) ships a PyTorch-Lightning ``.ckpt``; only its ``state_dict`` is used. Expected names
(``i`` = ViT block 0..31, ``j`` = decoder layer 0..5), left HMR2.0, right ours:

    backbone.patch_embed.proj.{weight,bias}        -> backbone.vit.patch_embed.proj.*
    backbone.pos_embed              (1, 1+192, D)  -> backbone.vit.pos_embed (1, 192, D) = pe[:, 1:] + pe[:, :1]
    backbone.blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*  -> backbone.vit.blocks.i.(same)
    backbone.last_norm.*                           -> backbone.vit.norm.*
    smpl_head.transformer.to_token_embedding.*     -> head.token_embed.*
    smpl_head.transformer.pos_embedding            -> head.query_pos
    smpl_head.transformer.transformer.layers.j.0.norm.*        -> head.layers.j.self_norm.*
    smpl_head.transformer.transformer.layers.j.0.fn.to_qkv.weight -> head.layers.j.self_attn.qkv.weight
    smpl_head.transformer.transformer.layers.j.0.fn.to_out.0.* -> head.layers.j.self_attn.out.*
    smpl_head.transformer.transformer.layers.j.1.norm.*        -> head.layers.j.cross_norm.*
    smpl_head.transformer.transformer.layers.j.1.fn.to_q.weight  -> head.layers.j.cross_attn.q.weight
    smpl_head.transformer.transformer.layers.j.1.fn.to_kv.weight -> head.layers.j.cross_attn.kv.weight
    smpl_head.transformer.transformer.layers.j.1.fn.to_out.0.* -> head.layers.j.cross_attn.out.*
    smpl_head.transformer.transformer.layers.j.2.norm.*        -> head.layers.j.ffn_norm.*
    smpl_head.transformer.transformer.layers.j.2.fn.net.0.*    -> head.layers.j.ffn.fc1.*
    smpl_head.transformer.transformer.layers.j.2.fn.net.3.*    -> head.layers.j.ffn.fc2.*
    smpl_head.{decpose,decshape,deccam}.*          -> head.{pose_out,shape_out,cam_out}.*
    smpl_head.{init_body_pose,init_betas,init_cam} -> head.{init_pose,init_betas,init_cam}

ViTPose keeps a class-token slot in ``pos_embed`` and adds it to every patch (``x + pe[:, 1:] + pe[:, :1]``);
folding it in gives the same features. Everything else in the checkpoint (``smpl.*`` SMPL body-model
buffers, ``discriminator.*``, the ``initialized`` flag) is not part of inference and is skipped; the loss
modules hold no tensors. Checked against the full released key list (tests/fixtures/hmr2/released_keys.json).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from pseudolabel.humans.config import FULL, HMR2Config
from pseudolabel.humans.model import HMR2
from fourm_core.checkpoints import CheckpointError as _CheckpointError
from fourm_core.checkpoints import read_state_dict
from fourm_core.seeding import seeded

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "hmr2_config.json"
# Released tensors inference does not use (the loss modules hold no tensors, so they need no entry); the full
# released list is checked against these in tests/pseudolabel_detect/test_hmr2_released_keys.py
SKIPPED_PREFIXES = ("smpl.", "discriminator.")
SKIPPED_NAMES = frozenset({"initialized"})

_DEC = "smpl_head.transformer.transformer.layers"
# Placeholders shared by both sides of a rule: {n} a layer index, {p} weight|bias, {m} a ViT block submodule.
_SLOTS = {"n": r"(?P<n>\d+)", "p": r"(?P<p>weight|bias)",
          "m": r"(?P<m>norm1|attn\.qkv|attn\.proj|norm2|mlp\.fc1|mlp\.fc2)"}
# (HMR2.0 name, our name)
RULES: list[tuple[str, str]] = [
    ("backbone.patch_embed.proj.{p}", "backbone.vit.patch_embed.proj.{p}"),
    ("backbone.pos_embed", "backbone.vit.pos_embed"),  # value folded, see module docstring
    ("backbone.blocks.{n}.{m}.{p}", "backbone.vit.blocks.{n}.{m}.{p}"),
    ("backbone.last_norm.{p}", "backbone.vit.norm.{p}"),
    ("smpl_head.transformer.to_token_embedding.{p}", "head.token_embed.{p}"),
    ("smpl_head.transformer.pos_embedding", "head.query_pos"),
    (_DEC + ".{n}.0.norm.{p}", "head.layers.{n}.self_norm.{p}"),
    (_DEC + ".{n}.0.fn.to_qkv.weight", "head.layers.{n}.self_attn.qkv.weight"),
    (_DEC + ".{n}.0.fn.to_out.0.{p}", "head.layers.{n}.self_attn.out.{p}"),
    (_DEC + ".{n}.1.norm.{p}", "head.layers.{n}.cross_norm.{p}"),
    (_DEC + ".{n}.1.fn.to_q.weight", "head.layers.{n}.cross_attn.q.weight"),
    (_DEC + ".{n}.1.fn.to_kv.weight", "head.layers.{n}.cross_attn.kv.weight"),
    (_DEC + ".{n}.1.fn.to_out.0.{p}", "head.layers.{n}.cross_attn.out.{p}"),
    (_DEC + ".{n}.2.norm.{p}", "head.layers.{n}.ffn_norm.{p}"),
    (_DEC + ".{n}.2.fn.net.0.{p}", "head.layers.{n}.ffn.fc1.{p}"),
    (_DEC + ".{n}.2.fn.net.3.{p}", "head.layers.{n}.ffn.fc2.{p}"),
    ("smpl_head.decpose.{p}", "head.pose_out.{p}"),
    ("smpl_head.decshape.{p}", "head.shape_out.{p}"),
    ("smpl_head.deccam.{p}", "head.cam_out.{p}"),
    ("smpl_head.init_body_pose", "head.init_pose"),
    ("smpl_head.init_betas", "head.init_betas"),
    ("smpl_head.init_cam", "head.init_cam"),
]
_POS_THEIRS, _POS_OURS = "backbone.pos_embed", "backbone.vit.pos_embed"


def _regex(template: str) -> re.Pattern:
    out = re.escape(template)
    for slot, rx in _SLOTS.items():
        out = out.replace(re.escape("{" + slot + "}"), rx)
    return re.compile(out + "$")


_FORWARD = [(_regex(a), b) for a, b in RULES]
_BACKWARD = [(_regex(b), a) for a, b in RULES]


class CheckpointError(_CheckpointError):
    """A checkpoint does not have the HMR2.0 layout (or cannot be read safely)."""


def _rename(key: str, rules: list[tuple[re.Pattern, str]]) -> str | None:
    for rx, tmpl in rules:
        m = rx.match(key)
        if m:
            return tmpl.format(**m.groupdict())
    return None


def map_hmr2_key(key: str) -> str | None:
    """HMR2.0 parameter name -> ours; None for names inference does not use. Raises on unknown names."""
    ours = _rename(key, _FORWARD)
    if ours is None and not (key.startswith(SKIPPED_PREFIXES) or key in SKIPPED_NAMES):
        raise CheckpointError(f"unexpected HMR2.0 parameter {key!r}")
    return ours


def hmr2_to_ours(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename (and fold ``pos_embed``) an HMR2.0 state dict into our :class:`HMR2` names."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        ours = map_hmr2_key(k)
        if ours is None:
            continue
        if k == _POS_THEIRS:
            v = v[:, 1:] + v[:, :1]  # (1, 1+N, D) -> (1, N, D): fold the class-token slot into every patch
        out[ours] = v
    return out


def ours_to_hmr2(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`hmr2_to_ours` (the class-token slot of ``pos_embed`` set to zero). The tests use it to
    build a checkpoint with HMR2.0's naming from our tiny model."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        theirs = _rename(k, _BACKWARD)
        if theirs is None:
            raise CheckpointError(f"no HMR2.0 name for {k!r}")
        out[theirs] = torch.cat([torch.zeros_like(v[:, :1]), v], dim=1) if k == _POS_OURS else v
    return out


def read_hmr2_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of an HMR2.0 checkpoint: a Lightning ``.ckpt`` (read with ``weights_only=True`` only) or
    a ``.safetensors`` file of that state dict. Raises :class:`CheckpointError` with the one-line conversion
    when the safe loader refuses the ``.ckpt`` (expected for the released file: see the message)."""
    try:
        return read_state_dict(path, fix=(
            "Lightning checkpoints of HMR2.0 pickle the yacs config in 'hyper_parameters', which the safe loader "
            "cannot rebuild. Convert once, in an environment you trust that has yacs installed: "
            "safetensors.torch.save_file(torch.load(ckpt, weights_only=False)['state_dict'], 'hmr2.safetensors'), "
            "and pass the .safetensors file"))
    except _CheckpointError as exc:
        raise CheckpointError(str(exc)) from exc


def load_hmr2_checkpoint(path: str | Path, cfg: HMR2Config = FULL) -> HMR2:
    """Build :class:`HMR2` at ``cfg`` and load HMR2.0's released weights into it (strict: every one of our
    parameters must come from the checkpoint)."""
    model = HMR2(cfg)
    model.load_state_dict(hmr2_to_ours(read_hmr2_state_dict(path)), strict=True)
    return model.eval()


def save_pose_model(model: HMR2, path: str | Path) -> None:
    """Our format: ``model.safetensors`` + ``hmr2_config.json`` in directory ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path / WEIGHTS_FILE))
    (path / CONFIG_FILE).write_text(json.dumps(model.cfg.to_dict(), indent=2) + "\n")


def load_pose_model(path: str | Path) -> HMR2:
    """Load a directory written by :func:`save_pose_model`."""
    path = Path(path)
    cfg = HMR2Config(**json.loads((path / CONFIG_FILE).read_text()))
    model = HMR2(cfg)
    model.load_state_dict(read_state_dict(path / WEIGHTS_FILE), strict=True)
    return model.eval()


def build_pose_model(profile: str = "tiny", seed: int = 0) -> HMR2:
    """Random-weight :class:`HMR2` at ``profile`` ("tiny" for tests, "full" = ViT-H for benches), seeded
    without touching the global RNG."""
    from pseudolabel.humans.config import PROFILES

    with seeded(seed):
        return HMR2(PROFILES[profile]).eval()
