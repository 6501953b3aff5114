"""``compile: true``: each transformer block compiles once per stack, without graph breaks, and the
compiled model computes what the eager one does under the same parameter names."""

from __future__ import annotations

import copy

import pytest
import torch
from torch._dynamo.utils import counters

from .test_model import masked_batch
from .conftest import TINY_MODALITIES


@pytest.mark.slow
def test_compiled_blocks_match_eager_with_one_graph_per_stack(tiny_config):
    from train_stage.model import FourM

    torch.manual_seed(0)
    eager = FourM(tiny_config)
    compiled = copy.deepcopy(eager)
    names = list(compiled.state_dict())
    torch._dynamo.reset()
    counters.clear()
    compiled.compile_blocks()
    assert list(compiled.state_dict()) == names  # checkpoints and FSDP2 see the same names

    for seed in (0, 1):  # a second batch of the same shapes must not recompile
        batch = masked_batch(TINY_MODALITIES, seed=seed)
        ref, out = eager(batch), compiled(batch)
        torch.testing.assert_close(out.loss, ref.loss, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.modality_losses, ref.modality_losses, rtol=1e-5, atol=1e-5)
        ref.loss.backward()
        out.loss.backward()
        for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
            if p.grad is not None:
                torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=name)
        eager.zero_grad()
        compiled.zero_grad()

    # every encoder block shares one graph and every decoder block another; none broke into pieces
    assert counters["stats"]["unique_graphs"] == 2
    assert not counters["graph_break"]
