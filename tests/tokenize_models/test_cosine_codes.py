"""Codes stay on the unit sphere and the lookup is by cosine similarity (scale-invariant)."""

import torch

from tokenize_stage.models.quantizer import VectorQuantizer


def test_codes_are_unit_norm_before_and_after_updates():
    torch.manual_seed(0)
    vq = VectorQuantizer(dim=8, codebook_size=32, codebook_dim=8).train()
    for _ in range(5):
        vq(torch.randn(4, 16, 8) * 7)
    assert torch.allclose(vq.codebook.norm(dim=-1), torch.ones(32), atol=1e-5)


def test_lookup_ignores_input_scale():
    torch.manual_seed(0)
    vq = VectorQuantizer(dim=8, codebook_size=64, codebook_dim=8).eval()
    x = torch.randn(2, 10, 8)
    assert torch.equal(vq(x).indices, vq(x * 100).indices)


def test_lookup_picks_highest_cosine():
    vq = VectorQuantizer(dim=4, codebook_size=4, codebook_dim=4).eval()
    vq.embed.copy_(torch.eye(4))
    x = torch.tensor([[[0.1, 5.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.2], [0.0, 0.0, 0.3, 0.1]]])
    assert vq(x).indices.tolist() == [[1, 3, 2]]
