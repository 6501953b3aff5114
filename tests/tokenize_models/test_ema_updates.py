"""EMA updates move used codes towards the mean of their assigned vectors; eval mode never updates."""

import torch
import torch.nn.functional as F

from tokenize_stage.models.quantizer import VectorQuantizer


def _vq():
    vq = VectorQuantizer(dim=4, codebook_size=4, codebook_dim=4, decay=0.5, dead_code_threshold=0.0)
    vq.embed.copy_(torch.eye(4))
    vq.embed_sum.copy_(torch.eye(4))
    return vq


def test_used_code_moves_towards_its_vectors():
    vq = _vq().train()
    target = F.normalize(torch.tensor([1.0, 0.6, 0.0, 0.0]), dim=0)
    before = vq.codebook[0] @ target
    for _ in range(10):
        vq(target.repeat(1, 8, 1))
    assert vq.codebook[0] @ target > before
    assert vq.codebook[0] @ target > 0.999  # converges onto the cluster mean
    assert torch.allclose(vq.codebook[1:], torch.eye(4)[1:], atol=1e-5)  # unused codes keep their direction


def test_cluster_size_tracks_counts():
    vq = _vq().train()
    vq(torch.tensor([[[1.0, 0, 0, 0]] * 6 + [[0, 1.0, 0, 0]] * 2]))
    # decay 0.5: 0.5 * 1 + 0.5 * count
    assert torch.allclose(vq.cluster_size, torch.tensor([3.5, 1.5, 0.5, 0.5]))


def test_eval_mode_does_not_update():
    vq = _vq().eval()
    before = vq.codebook.clone()
    vq(torch.randn(2, 8, 4))
    assert torch.equal(vq.codebook, before)
