"""Labels have the layout the released 4M tokenizers take (tests/fixtures/ml4m/tokenizers/released): the
registry's widths and grids equal the released input specs, and the CLIP / ImageBind labelers produce
their features from ImageNet-normalised pixels with the ImageBind global = 1280-d token 0."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fourm_core.label_codec import decode_label
from fourm_core.modalities import MODALITIES
from pseudolabel.labelers.model_base import IMAGENET_MEAN, IMAGENET_STD, resize_batch
from pseudolabel.registry import labeler_class
from pseudolabel.spec import Batch
from pseudolabel.testing import photo, synthetic_image
from tokenize_stage.models import build_tokenizer
from tokenize_stage.models.ml4m import config_from_ml4m
from tokenize_stage.normalize import normalize_batch
from tokenize_stage.registry import MASK_SIZE, POSE_DIM, tokenizer_config

RELEASED = sorted((Path(__file__).parents[1] / "fixtures" / "ml4m" / "tokenizers" / "released").glob("*.keys.json"))


@pytest.mark.parametrize("keys", RELEASED, ids=lambda p: p.name.split(".")[0])
def test_registry_matches_released_input_spec(keys):
    table = json.loads(keys.read_text())
    kwargs = table["constructor_kwargs"]
    shapes = {k: tuple(v["shape"]) for k, v in table["tensors"].items()}
    released = config_from_ml4m(kwargs, shapes, hint=table["hub_id"])
    ours = tokenizer_config(released.name, "production")
    m = MODALITIES[ours.modality]
    if released.architecture == "mlp_memcodes":  # (B, D) vectors
        assert released.in_dim == ours.in_dim == (POSE_DIM if released.target == "pose" else m.feature_dim)
        return
    assert released.in_channels == ours.in_channels and released.out_channels == ours.out_channels
    assert released.codebook_size == ours.codebook_size
    if released.target == "mask":
        assert released.image_size == MASK_SIZE and released.n_tokens == 16
        return
    # the same token grid at 224 (features: one token per labeler patch; pixels: 16-px patches)
    assert released.grid == ours.grid == m.grid
    if released.target == "features":
        assert released.in_channels == m.feature_dim and kwargs["patch_size"] == 224 // m.grid[0]


@pytest.fixture(scope="module")
def batch():
    return Batch(["a", "b"], [photo("chelsea", 64), synthetic_image(3, 48)], ["", ""])


def _labels(name, batch):
    cls = labeler_class(name)
    lab = cls()
    lab.model = cls().seeded_tiny().eval()
    return lab, lab.label_batch(batch)


def test_imagebind_labels_are_token_0_of_the_1280d_output_from_imagenet_pixels(batch):
    lab, out = _labels("imagebind", batch)
    x = resize_batch(batch.rgb, 224, IMAGENET_MEAN, IMAGENET_STD)
    with torch.no_grad():
        tokens = lab.model.forward_features(x)  # (B, 1 + g^2, embed_dim)
    width = tokens.shape[-1]
    for i, row in enumerate(out):
        glob = decode_label("imagebind_global", row["imagebind_global"])
        feats = decode_label("imagebind_features", row["imagebind_features"])
        assert glob.shape == (width,) and feats.shape == (16, 16, width)  # the same width: not the projection
        np.testing.assert_allclose(glob, tokens[i, 0].numpy(), atol=2e-3, rtol=1e-2)  # fp16 storage
        np.testing.assert_allclose(feats.reshape(-1, width), tokens[i, 1:].numpy(), atol=2e-3, rtol=1e-2)
    # what the pipeline hands the ImageBind-global tokenizer (ml4m layout, labeler's width) encodes as (B, D)
    cfg = tokenizer_config("imagebind_global_memcodes", "tiny", layout="ml4m").model_copy(update={"in_dim": width})
    x_tok = normalize_batch(cfg, [decode_label("imagebind_global", r["imagebind_global"]) for r in out])
    assert x_tok.shape == (2, width) and build_tokenizer(cfg).eval().encode(x_tok).shape == (2, cfg.n_tokens)


def test_clip_features_come_from_imagenet_normalised_pixels(batch):
    lab, out = _labels("clip", batch)
    x = resize_batch(batch.rgb, 224, IMAGENET_MEAN, IMAGENET_STD)
    with torch.no_grad():
        h = lab.model.vision_model(pixel_values=x).last_hidden_state[:, 1:]
        ref = lab.model.visual_projection(lab.model.vision_model.post_layernorm(h))
    for i, row in enumerate(out):
        feats = decode_label("clip_features", row["clip_features"])
        np.testing.assert_allclose(feats.reshape(ref.shape[1:]), ref[i].numpy(), atol=2e-3, rtol=1e-2)
