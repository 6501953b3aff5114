"""Fixtures of the train-stage tests: tiny configs and masked batches."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)

# A small but complete modality set: every kind (pixels, sequence, chunked metadata, T5 embeddings,
# image tokens, global tokens) so each code path runs, while vocabularies stay cheap.
TINY_MODALITIES = ["rgb@224", "caption", "t5_caption", "metadata", "tok_depth@224", "tok_semseg@224",
                   "tok_dinov2_global"]


@pytest.fixture
def tiny_config():
    from train_stage.model import preset

    return preset("tiny", TINY_MODALITIES, dim=32, num_heads=2)
