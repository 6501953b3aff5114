"""Gradients pass the non-differentiable lookup and reach the encoder (straight-through estimators)."""

import torch

from tokenize_stage.models.memcodes import Memcodes
from tokenize_stage.models.quantizer import VectorQuantizer
from tokenize_stage.registry import tokenizer_config
from tokenize_stage.models.hub import build_tokenizer


def test_vq_passes_gradient_to_its_input():
    vq = VectorQuantizer(dim=8, codebook_size=16, codebook_dim=4).train()
    x = torch.randn(2, 5, 8, requires_grad=True)
    vq(x).quantized.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_memcodes_passes_gradient_to_input_and_codebook():
    mc = Memcodes(dim=8, codebook_size=16).train()
    x = torch.randn(2, 5, 8, requires_grad=True)
    (mc(x).quantized ** 2).sum().backward()
    assert x.grad.abs().sum() > 0 and mc.codes.grad.abs().sum() > 0


def test_gradient_reaches_vqvae_encoder():
    torch.manual_seed(0)
    model = build_tokenizer(tokenizer_config("semseg_vqvae", "tiny")).train()
    loss, _ = model.training_loss(torch.randint(0, 134, (2, 32, 32)))
    loss.backward()
    assert model.encoder.proj.weight.grad.abs().sum() > 0
    assert model.encoder.vit.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
