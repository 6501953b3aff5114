"""The largest-batch search: exact answer for any threshold, few probes, clear refusal of bad bounds."""

from __future__ import annotations

import pytest
import torch

from train_stage.capacity import fits_in_memory, largest_fitting


@pytest.mark.parametrize("threshold", [1, 2, 3, 7, 8, 9, 63, 64, 65, 1000])
def test_finds_the_threshold_in_logarithmic_probes(threshold):
    probed = []

    def fits(n):
        probed.append(n)
        return n <= threshold

    assert largest_fitting(fits) == threshold
    assert len(probed) <= 2 * threshold.bit_length() + 2
    assert len(set(probed)) == len(probed)  # no size is tried twice


def test_nothing_fits_and_limit_caps_the_search():
    assert largest_fitting(lambda n: False) == 0
    assert largest_fitting(lambda n: True, start=3, limit=40) == 40
    assert largest_fitting(lambda n: n <= 17, start=5, limit=40) == 17
    with pytest.raises(ValueError, match="start"):
        largest_fitting(lambda n: True, start=0)


def test_probe_turns_out_of_memory_into_false_and_passes_other_errors():
    def step(n):
        if n > 4:
            raise torch.OutOfMemoryError("CUDA out of memory")
        if n == 3:
            raise RuntimeError("a real bug")

    probe = fits_in_memory(step)
    assert probe(4) and not probe(5)
    with pytest.raises(RuntimeError, match="real bug"):
        probe(3)
