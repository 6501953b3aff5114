"""Fixtures for the SAM tests: one tiny SAM saved as safetensors and loaded back through load_sam."""

from __future__ import annotations

import cv2
import pytest
import torch

from pseudolabel.sam.model import build_sam, load_sam, save_sam
from pseudolabel.sam.synthetic import shapes_image


@pytest.fixture(scope="session", autouse=True)
def _few_threads():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("sam_tiny")
    save_sam(build_sam("tiny", seed=0), d, "tiny")
    return d


@pytest.fixture(scope="session")
def tiny_sam(tiny_dir):
    return load_sam(str(tiny_dir)).model


@pytest.fixture(scope="session")
def test_images():
    """Two real photos (scikit-image, resized small) and one synthetic shapes image, RGB uint8."""
    from skimage import data

    return {
        "astronaut": cv2.resize(data.astronaut(), (192, 192), interpolation=cv2.INTER_AREA),
        "coffee": cv2.resize(data.coffee(), (256, 192), interpolation=cv2.INTER_AREA),
        "shapes": shapes_image(7, size=(160, 224))[0],
    }
