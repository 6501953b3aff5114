"""Tiny detector / pose models shared by the detection and human-pose tests (built once per session)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

SMALL_INPUT = dict(size=128, max_size=160)  # tiny models on small inputs keep the tests fast


@pytest.fixture(scope="session", autouse=True)
def _quiet_transformers():
    torch.set_num_threads(1)
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def small(detector):
    """The same detector fed 128-px inputs instead of the production 640/800."""
    from pseudolabel.detection import with_input_size

    return with_input_size(detector, SMALL_INPUT["size"], SMALL_INPUT["max_size"])


@pytest.fixture(scope="session")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (90, 120, 3), dtype=np.uint8), rng.integers(0, 256, (100, 100, 3), dtype=np.uint8),
            rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)]


@pytest.fixture(scope="session")
def tiny_pose_model():
    from pseudolabel.humans import build_pose_model

    return build_pose_model("tiny")
