"""Feature and global-embedding tokenizers take their input width from the labels they train on."""

import numpy as np
import pytest

from tokenize_stage.registry import tokenizer_config
from tokenize_stage.train_tokenizer import fit_to_labels


def test_feature_tokenizer_follows_the_labelers_width():
    tcfg = tokenizer_config("clip_vqvae", "tiny")
    fitted = fit_to_labels(tcfg, [np.zeros((14, 14, 16), np.float32)] * 3, "demo/labels/clip_features")
    assert (fitted.in_channels, fitted.out_channels) == (16, 16)
    assert fitted.codebook_size == tcfg.codebook_size and fitted.image_size == tcfg.image_size


def test_global_tokenizer_follows_the_embedding_size_and_others_are_unchanged():
    tcfg = tokenizer_config("dinov2_global_memcodes", "tiny")
    assert fit_to_labels(tcfg, [np.zeros(32, np.float32)] * 2, "x").in_dim == 32
    depth = tokenizer_config("depth_diffusion", "tiny")
    assert fit_to_labels(depth, [np.zeros((64, 64), np.float32)], "x") is depth


def test_mixed_widths_name_the_labels_and_the_fix():
    tcfg = tokenizer_config("clip_vqvae", "tiny")
    with pytest.raises(ValueError, match="demo/labels/clip_features.*Re-run the labeler"):
        fit_to_labels(tcfg, [np.zeros((14, 14, 16)), np.zeros((14, 14, 32))], "demo/labels/clip_features")
