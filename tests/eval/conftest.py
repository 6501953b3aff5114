"""Fixtures of the eval-stage tests: one thread, and a tiny random-init 4M model."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)

# every modality kind the samplers handle, with small vocabularies where the registry allows
EVAL_MODALITIES = ["rgb@224", "caption", "tok_depth@224", "tok_semseg@224", "tok_dinov2_global"]


@pytest.fixture(scope="session")
def tiny_model():
    from train_stage.model import FourM, preset

    torch.manual_seed(0)
    model = FourM(preset("tiny", EVAL_MODALITIES, dim=32, num_heads=2))
    return model.eval()
