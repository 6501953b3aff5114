"""Mask2Former's COCO input rule: shorter side 800, longer capped at 1333, aspect kept, padded to a multiple of 32."""

import numpy as np
import pytest

from pseudolabel.labelers.semseg import batch_inputs, input_size


@pytest.mark.parametrize("hw,want", [((480, 640), (800, 1067)), ((640, 480), (1067, 800)), ((800, 800), (800, 800)),
                                     ((100, 2000), (67, 1333)), ((64, 48), (1067, 800))])
def test_shorter_side_800_longer_at_most_1333(hw, want):
    assert input_size(*hw, 800, 1333) == want


def test_batch_is_padded_with_normalised_zeros_and_keeps_each_image_size():
    imgs = [np.full((30, 40, 3), 255, np.uint8), np.full((40, 30, 3), 255, np.uint8)]
    x, sizes = batch_inputs(imgs, 64, 128)
    assert sizes == [(64, 85), (85, 64)]
    assert x.shape == (2, 3, 96, 96)  # max h 85 and max w 85, each rounded up to 96
    assert float(x[0, :, :64, :85].min()) > 2.0  # white, ImageNet-normalised
    assert float(x[0, :, 64:].abs().max()) == 0.0 and float(x[0, :, :, 85:].abs().max()) == 0.0
