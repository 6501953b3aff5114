"""The HMR2.0 key mapping against the full released key list (names and shapes of the released checkpoint's
``state_dict``, written from the published 4D-Humans source: tests/fixtures/hmr2/README.md). Everything is built
on the meta device at the FULL (ViT-H) configuration, so no weights are allocated."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import torch

from pseudolabel.humans.checkpoint import (RULES, SKIPPED_NAMES, SKIPPED_PREFIXES, hmr2_to_ours, map_hmr2_key,
                                          ours_to_hmr2)
from pseudolabel.humans.config import FULL
from pseudolabel.humans.model import HMR2

RELEASED: dict[str, list[int]] = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "hmr2" / "released_keys.json").read_text())

_SMPL_BUFFERS = ["shapedirs", "vertex_joint_selector.extra_joints_idxs", "faces_tensor", "v_template", "J_regressor",
                 "posedirs", "parents", "lbs_weights", "joint_regressor_extra", "joint_map"]
_DISC_LAYERS = (["D_conv1", "D_conv2", "betas_fc1", "betas_fc2", "betas_out", "D_alljoints_fc1", "D_alljoints_fc2",
                 "D_alljoints_out"] + [f"pose_out.{i}" for i in range(23)])
# Released tensors inference does not use, each with the reason. (The loss modules Keypoint2DLoss,
# Keypoint3DLoss and ParameterLoss wrap L1Loss / MSELoss and hold no tensors, so they have no entries.)
DROPPED: dict[str, set[str]] = {
    # SMPL body model (smplx SMPLLayer buffers + HMR2's extra-joint regressor and OpenPose joint map): turns the
    # predicted parameters into a mesh / joints for the training losses; we output the parameters only, and
    # SMPL's data has its own licence
    "smpl body model": {f"smpl.{n}" for n in _SMPL_BUFFERS},
    # adversarial pose/shape prior (HMR's discriminator), only trained against, never run at inference
    "discriminator": {f"discriminator.{n}.{p}" for n in _DISC_LAYERS for p in ("weight", "bias")},
    # Lightning bookkeeping flag for ActNorm initialisation (HMR2.0 has no ActNorm layers)
    "initialized flag": {"initialized"},
}
DROPPED_KEYS = set().union(*DROPPED.values())


@pytest.fixture(scope="module")
def full_meta() -> HMR2:
    """Our model at the FULL (ViT-H) config with meta tensors: names and shapes, no memory."""
    with torch.device("meta"):
        return HMR2(FULL)


@pytest.fixture(scope="module")
def ours(full_meta) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in full_meta.state_dict().items()}


def _released_meta() -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device="meta") for k, shape in RELEASED.items()}


def test_fixture_is_the_whole_released_state_dict():
    # 389 backbone + 114 head (6 decoder layers x 17) + 62 discriminator + 10 SMPL + `initialized`
    assert len(RELEASED) == 576
    assert len(DROPPED_KEYS) == 73 and DROPPED_KEYS <= set(RELEASED)


def test_every_released_key_is_mapped_or_dropped_on_purpose():
    unmapped = {k for k in RELEASED if map_hmr2_key(k) is None}  # raises on a name it does not know
    assert unmapped == DROPPED_KEYS


def test_released_weights_map_onto_ours_one_to_one_with_the_same_shapes(ours, full_meta):
    sources = Counter(map_hmr2_key(k) for k in RELEASED if k not in DROPPED_KEYS)
    assert set(sources) == set(ours)
    assert [k for k, n in sources.items() if n != 1] == []  # each of ours comes from exactly one released key
    converted = hmr2_to_ours(_released_meta())  # the real conversion, including the pos_embed class-slot fold
    assert {k: v.shape for k, v in converted.items()} == ours
    full_meta.load_state_dict(converted, strict=True)  # what load_hmr2_checkpoint does


def test_inverse_mapping_gives_the_released_names_and_shapes(full_meta):
    back = ours_to_hmr2(full_meta.state_dict())
    assert {k: list(v.shape) for k, v in back.items()} == {
        k: s for k, s in RELEASED.items() if k not in DROPPED_KEYS}


def test_no_dead_rules():
    # every rename rule and every skipped prefix matches a released name, so none is guessed
    for theirs, _ in RULES:
        rx = re.compile(re.escape(theirs).replace(r"\{n\}", r"\d+").replace(r"\{p\}", "(weight|bias)")
                        .replace(r"\{m\}", r"[a-z0-9._]+") + "$")
        assert any(rx.match(k) for k in RELEASED), theirs
    for prefix in SKIPPED_PREFIXES:
        assert any(k.startswith(prefix) for k in RELEASED), prefix
    assert SKIPPED_NAMES <= set(RELEASED)


def test_layer_norm_eps_as_released(full_meta):
    # not visible in the key list but needed to reproduce the outputs: ViTPose builds its norms with
    # partial(nn.LayerNorm, eps=1e-6); the decoder's PreNorm uses nn.LayerNorm(dim) (eps 1e-5)
    eps = {n: m.eps for n, m in full_meta.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    assert {e for n, e in eps.items() if n.startswith("backbone.")} == {1e-6}
    assert {e for n, e in eps.items() if n.startswith("head.")} == {1e-5}
