"""Dead codes (EMA cluster size below threshold) are moved onto batch vectors and get used again."""

import torch
import torch.nn.functional as F

from tokenize_stage.models.quantizer import VectorQuantizer


def _stuck_codebook(vq: VectorQuantizer, k: int) -> None:
    """One code near the data, every other code on the far side of the sphere where it never wins."""
    codes = F.normalize(torch.randn(k, 8) * 0.1 - torch.eye(8)[0], dim=-1)
    codes[0] = torch.eye(8)[0]
    vq.embed.copy_(codes)
    vq.embed_sum.copy_(codes)


def test_dead_codes_are_revived_and_usage_increases():
    torch.manual_seed(0)
    k = 64
    data = F.normalize(0.3 * torch.randn(1024, 8) + torch.eye(8)[0], dim=-1)  # a cap around +e0
    no_restart = VectorQuantizer(dim=8, codebook_size=k, codebook_dim=8, decay=0.8, dead_code_threshold=0.0)
    with_restart = VectorQuantizer(dim=8, codebook_size=k, codebook_dim=8, decay=0.8, dead_code_threshold=1.0)
    for vq in (no_restart, with_restart):
        _stuck_codebook(vq, k)
    assert no_restart.eval()(data[None]).indices.unique().numel() == 1
    no_restart.train(), with_restart.train()
    for _ in range(30):
        batch = data[torch.randint(0, 1024, (128,))][None]
        no_restart(batch)
        with_restart(batch)
    used_without = no_restart.eval()(data[None]).indices.unique().numel()
    used_with = with_restart.eval()(data[None]).indices.unique().numel()
    assert used_without == 1  # without restarts the dead codes stay dead
    assert used_with > k * 3 // 4  # with restarts nearly the whole codebook serves the data
    perplexity_with = with_restart(data[None]).perplexity
    assert perplexity_with > 20


def test_restart_places_codes_on_batch_vectors():
    vq = VectorQuantizer(dim=4, codebook_size=8, codebook_dim=4, dead_code_threshold=1.0).train()
    vq.cluster_size.zero_()
    vq.cluster_size[0] = 10.0
    z = F.normalize(torch.randn(16, 4), dim=-1)
    n = vq._restart_dead_codes(z)
    assert n == 7
    sims = vq.codebook[1:] @ z.t()
    assert torch.allclose(sims.max(dim=1).values, torch.ones(7), atol=1e-5)
