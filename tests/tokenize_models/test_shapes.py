"""Token counts and vocabularies of the production configs match the modality registry (4M-FACTS §1),
and tiny models encode/decode with the right shapes."""

import pytest
import torch

from fourm_core.modalities import MODALITIES
from tokenize_stage.models import build_tokenizer
from tokenize_stage.registry import tokenizer_config, tokenizer_names, tokenizer_specs
from tokenize_stage.synthetic import synthetic_batch


def test_production_matches_registry():
    for name, spec in tokenizer_specs().items():
        cfg = tokenizer_config(name, "production")
        for mod in spec.modalities:
            m = MODALITIES[mod]
            if m.kind.value in ("image_tokens", "global_tokens"):
                assert cfg.n_tokens == m.max_tokens and cfg.codebook_size == m.vocab_size, name
    assert tokenizer_config("pose_vq", "production").n_tokens == 8
    assert tokenizer_config("pose_vq", "production").codebook_size == 1024
    mask = tokenizer_config("mask_vq", "production")
    assert (mask.image_size, mask.n_tokens, mask.codebook_size) == (64, 16, 1024)
    assert tokenizer_config("dinov2_vqvae", "production").in_channels == 768
    assert tokenizer_config("imagebind_vqvae", "production").in_channels == 1280
    assert tokenizer_config("clip_vqvae", "production").in_channels == 512
    assert tokenizer_config("semseg_vqvae", "production").in_channels == 134
    vit_b = tokenizer_config("semseg_vqvae", "production")
    assert (vit_b.dim, vit_b.encoder_depth, vit_b.heads) == (768, 12, 12)
    mlp = tokenizer_config("dinov2_global_memcodes", "production")
    assert (mlp.width, mlp.blocks) == (1024, 6)


@pytest.mark.parametrize("name", tokenizer_names())
def test_tiny_shapes(name):
    cfg = tokenizer_config(name, "tiny")
    model = build_tokenizer(cfg).eval()
    x = synthetic_batch(cfg, 2, seed=0)
    tokens = model.encode(x)
    assert tokens.shape == (2, cfg.n_tokens) and tokens.dtype == torch.int64
    assert int(tokens.max()) < cfg.codebook_size
    kwargs = {"steps": 2} if cfg.architecture == "diffusion_vq" else {}
    assert model.decode(tokens, **kwargs).shape == x.shape
