"""Depth, normals, image and ensembling metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from eval_stage.metrics import (align_scale_shift, angular_error_deg, depth_metrics, ensemble_mean, ensemble_normals,
                                ensemble_vote, l1_error, mask_iou, normal_metrics, psnr)


def test_affine_alignment_recovers_scale_and_shift():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(2, 5, 7, generator=g) + 0.5
    pred = (gt - 0.3) / 2.5  # gt = 2.5 * pred + 0.3 exactly
    aligned = align_scale_shift(pred, gt)
    assert torch.allclose(aligned, gt, atol=1e-6)
    m = depth_metrics(pred, gt)
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-6) and m["delta1"] == 1.0


def test_alignment_matches_numpy_lstsq_on_valid_pixels():
    import numpy as np

    g = torch.Generator().manual_seed(1)
    pred, gt = torch.rand(3, 4, 4, generator=g), torch.rand(3, 4, 4, generator=g) + 0.1
    valid = torch.rand(3, 4, 4, generator=g) > 0.3
    aligned = align_scale_shift(pred, gt, valid)
    for b in range(3):
        p, t = pred[b][valid[b]].numpy(), gt[b][valid[b]].numpy()
        (s, c), *_ = np.linalg.lstsq(np.stack([p, np.ones_like(p)], 1), t, rcond=None)
        assert torch.allclose(aligned[b], torch.from_numpy(s * pred[b].numpy() + c), atol=1e-5)


def test_depth_hand_case_without_alignment():
    gt = torch.tensor([[[1.0, 2.0, 4.0, 0.0]]])  # last pixel: gt 0, never valid
    pred = torch.tensor([[[1.0, 3.0, 4.0, 9.0]]])
    m = depth_metrics(pred, gt, align=False)
    assert m["abs_rel"] == pytest.approx((0 + 0.5 + 0) / 3)
    assert m["delta1"] == pytest.approx(2 / 3)  # 3/2 = 1.5 >= 1.25 is a miss


def test_depth_is_mean_over_images():
    gt = torch.ones(2, 1, 2)
    pred = torch.tensor([[[1.0, 1.0]], [[2.0, 2.0]]])
    assert depth_metrics(pred, gt, align=False)["abs_rel"] == pytest.approx(0.5)


def test_normals_hand_case():
    gt = torch.zeros(1, 3, 1, 4)
    gt[0, 2] = 1.0  # all +z
    pred = torch.zeros(1, 3, 1, 4)
    angles = [0.0, 10.0, 20.0, 90.0]
    for i, a in enumerate(angles):
        r = math.radians(a)
        pred[0, 0, 0, i], pred[0, 2, 0, i] = math.sin(r) * 3, math.cos(r) * 3  # unnormalised on purpose
    err = angular_error_deg(pred, gt)
    assert torch.allclose(err[0, 0], torch.tensor(angles, dtype=torch.float64), atol=1e-5)
    m = normal_metrics(pred, gt)
    assert m["mean"] == pytest.approx(30.0, abs=1e-5)
    assert m["median"] == pytest.approx(15.0, abs=1e-5)
    assert m["pct_11.25"] == pytest.approx(50.0)
    assert m["pct_22.5"] == pytest.approx(75.0)
    assert m["pct_30"] == pytest.approx(75.0)


def test_normals_valid_mask_excludes_pixels():
    gt = torch.zeros(1, 3, 1, 2)
    gt[0, 2, 0, 0] = 1.0  # second pixel: zero vector, invalid by default
    pred = gt.clone()
    pred[0, 0, 0, 1] = 1.0
    assert normal_metrics(pred, gt)["mean"] == pytest.approx(0.0, abs=1e-5)


def test_psnr_l1_mask_iou():
    t = torch.zeros(2, 1, 2, 2)
    p = t.clone()
    p[0, 0, 0, 0] = 0.2  # mse 0.01 -> 20 dB
    p[1] = 0.1  # mse 0.01 -> 20 dB
    assert psnr(p, t) == pytest.approx(20.0)
    assert l1_error(p, t) == pytest.approx((0.2 + 0.4) / 8)
    a = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 0, 0]]], dtype=torch.bool)
    b = torch.tensor([[[1, 0, 1, 0]], [[0, 0, 0, 0]]], dtype=torch.bool)
    assert mask_iou(a, b).tolist() == pytest.approx([1 / 3, 1.0])


def test_ensembles():
    s = torch.tensor([[[0, 1, 2]], [[1, 1, 2]], [[1, 0, 0]]])  # (S=3, B=1, W=3) class maps
    assert ensemble_vote(s[:, :, None], 3)[0, 0].tolist() == [1, 1, 2]
    tie = torch.tensor([[[2]], [[1]]])  # one vote each: lowest id wins
    assert ensemble_vote(tie[:, :, None], 3).item() == 1
    assert torch.allclose(ensemble_mean(torch.tensor([[1.0], [3.0]])), torch.tensor([2.0]))
    n = torch.zeros(2, 1, 3, 1, 1)
    n[0, 0, 0] = 1.0
    n[1, 0, 1] = 1.0
    out = ensemble_normals(n)[0, :, 0, 0]
    assert torch.allclose(out, torch.tensor([1, 1, 0]) / math.sqrt(2))
