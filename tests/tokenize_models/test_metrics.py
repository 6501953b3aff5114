"""tokenize_stage.metrics against hand-computed cases and torchmetrics: these numbers decide whether a
tokenizer "beats its baseline"."""

import math

import pytest
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio
from torchmetrics.functional.classification import multiclass_jaccard_index

from tokenize_stage.metrics import (PRIMARY, baseline_prediction, beats, cosine, mask_iou, miou, psnr,
                                    reconstruction_metrics)


def test_psnr_matches_torchmetrics_per_sample_mean():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1
    x_hat = (x + 0.1 * torch.randn(4, 3, 8, 8, generator=g)).clamp(-1, 1)
    ref = peak_signal_noise_ratio(x_hat, x, data_range=2.0, reduction="none", dim=(1, 2, 3)).mean()
    assert psnr(x, x_hat) == pytest.approx(float(ref), rel=1e-5)
    # hand case: MSE 0.01 on range 2 -> 10 log10(4 / 0.01) = 26.02 dB
    assert psnr(torch.zeros(1, 4), torch.full((1, 4), 0.1)) == pytest.approx(10 * math.log10(400), rel=1e-5)


def test_miou_hand_case_and_torchmetrics():
    x = torch.tensor([[0, 0, 1, 1]])
    x_hat = torch.tensor([[0, 1, 1, 1]])
    # class 0: 1 / 2, class 1: 2 / 3; classes absent from both are not averaged
    assert miou(x, x_hat, n_classes=5) == pytest.approx((0.5 + 2 / 3) / 2)
    assert miou(x, x_hat, n_classes=5, ignore=0) == pytest.approx(1.0)  # only pixels whose target is 1 count
    g = torch.Generator().manual_seed(1)
    t, p = torch.randint(0, 6, (3, 16, 16), generator=g), torch.randint(0, 6, (3, 16, 16), generator=g)
    ref = multiclass_jaccard_index(p, t, num_classes=6, average="macro")  # every class occurs here
    assert miou(t, p, n_classes=6) == pytest.approx(float(ref), rel=1e-5)


def test_mask_iou_hand_cases():
    t = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    p = torch.tensor([[[0.9, 0.2], [0.7, 0.1]], [[0.4, 0.0], [0.0, 0.0]]])
    # sample 0: prediction > 0.5 = {(0,0), (1,0)}, target {(0,0), (0,1)} -> 1 / 3; sample 1: empty vs empty -> 1
    assert mask_iou(t, p) == pytest.approx((1 / 3 + 1) / 2)


def test_cosine_vectors_and_maps():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    assert cosine(x, torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])) == pytest.approx(0.0)  # (1 + 0 - 1) / 3
    maps = torch.zeros(1, 2, 1, 2)
    maps[0, 0, 0, 0], maps[0, 1, 0, 1] = 1.0, 1.0  # two positions, channel vectors e0 and e1
    same_first = maps.clone()
    same_first[0, :, 0, 1] = torch.tensor([1.0, 0.0])  # second position now orthogonal to the target
    assert cosine(maps, same_first) == pytest.approx(0.5)


def test_normal_angular_error_and_l1():
    x = torch.zeros(1, 3, 1, 2)
    x[0, 2] = 1.0  # both pixels face +z
    x_hat = torch.zeros(1, 3, 1, 2)
    x_hat[0, 2, 0, 0] = 1.0  # 0 degrees
    x_hat[0, 0, 0, 1] = 1.0  # 90 degrees
    m = reconstruction_metrics("normal", x, x_hat)
    assert m["angular_error_deg"] == pytest.approx(45.0, abs=1e-4)
    assert m["l1"] == pytest.approx(2 / 6)


def test_baselines():
    semseg = torch.tensor([[[1, 1], [2, 3]], [[1, 2], [2, 2]]])  # class 2 is the majority (4 of 8)
    assert torch.equal(baseline_prediction("semseg", semseg, 3), torch.full((3, 2, 2), 2))
    masks = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]], [[0.0, 0.0]]])  # per-pixel majority: 1, 0
    assert torch.equal(baseline_prediction("mask", masks, 2), torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]]))
    vecs = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    assert torch.equal(baseline_prediction("global", vecs, 2), torch.tensor([[2.0, 4.0], [2.0, 4.0]]))


@pytest.mark.parametrize("target", sorted(PRIMARY))
def test_every_target_reports_its_primary_metric_and_beats_orders_it(target):
    name, higher = PRIMARY[target]
    shapes = {"semseg": (2, 4, 4), "global": (2, 8), "pose": (2, 207), "features": (2, 8, 2, 2)}
    x = torch.randint(0, 3, shapes["semseg"]) if target == "semseg" else torch.rand(shapes.get(target, (2, 3, 4, 4)))
    perfect = reconstruction_metrics(target, x, x.clone())
    assert name in perfect
    worse = baseline_prediction(target, 1 - x if target != "semseg" else (x + 1) % 3, x.shape[0])
    bad = reconstruction_metrics(target, x, worse)
    assert beats(target, perfect, bad) and not beats(target, bad, perfect)
    assert not beats(target, perfect, perfect)  # a tie does not beat the baseline
    assert (perfect[name] > bad[name]) == higher
