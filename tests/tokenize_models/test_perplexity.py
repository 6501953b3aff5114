"""Perplexity = exp(entropy of the code histogram); usage = fraction of codes hit. Hand-computed cases."""

import math

import torch

from tokenize_stage.models.quantizer import codebook_perplexity, codebook_usage


def test_uniform_over_two_codes_is_two():
    idx = torch.tensor([[0, 0, 1, 1]])
    assert math.isclose(codebook_perplexity(idx, 8).item(), 2.0, rel_tol=1e-6)
    assert math.isclose(codebook_usage(idx, 8).item(), 2 / 8)


def test_single_code_is_one():
    assert math.isclose(codebook_perplexity(torch.full((3, 5), 4), 16).item(), 1.0, rel_tol=1e-6)


def test_skewed_hand_case():
    idx = torch.tensor([0, 0, 0, 1])  # p = (3/4, 1/4)
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert math.isclose(codebook_perplexity(idx, 4).item(), math.exp(entropy), rel_tol=1e-6)
