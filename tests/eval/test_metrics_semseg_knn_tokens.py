"""mIoU against torchmetrics, kNN against scikit-learn, masked-token metrics by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from eval_stage.metrics import knn_classify, knn_topk_accuracy, masked_token_metrics, miou
from eval_stage.metrics.tokens import pool_token_metrics


def test_miou_hand_case():
    gt = torch.tensor([[0, 0, 1, 1, 255]])
    pred = torch.tensor([[0, 1, 1, 1, 0]])
    r = miou(pred, gt, num_classes=3, ignore_index=255)
    # class 0: tp 1, union 2 -> 0.5; class 1: tp 2, union 3; class 2 absent everywhere -> left out
    assert r["miou"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert math.isnan(float(r["iou"][2]))
    assert r["pixel_acc"] == pytest.approx(3 / 4)


def test_miou_matches_torchmetrics():
    from torchmetrics.classification import MulticlassJaccardIndex

    g = torch.Generator().manual_seed(0)
    C, ignore = 6, 255
    gt = torch.randint(0, C - 1, (4, 16, 16), generator=g)  # class 5 never in gt
    pred = torch.where(torch.rand(4, 16, 16, generator=g) < 0.6, gt, torch.randint(0, C - 1, (4, 16, 16), generator=g))
    gt[:, :2] = ignore
    ours = miou(pred, gt, num_classes=C, ignore_index=ignore)
    # torchmetrics' default averages over classes present in gt or prediction (zero-union classes dropped)
    tm = MulticlassJaccardIndex(num_classes=C, ignore_index=ignore, average="macro")
    assert ours["miou"] == pytest.approx(float(tm(pred, gt)), abs=1e-6)
    tm_per = MulticlassJaccardIndex(num_classes=C, ignore_index=ignore, average="none")(pred, gt)
    present = ~torch.isnan(ours["iou"])
    assert torch.allclose(ours["iou"][present].float(), tm_per[present], atol=1e-6)


def _hand_votes(q, gallery, labels, C, k, T):
    sims = F.normalize(gallery, dim=1) @ F.normalize(q, dim=0)
    top = sims.argsort(descending=True)[:k]
    votes = torch.zeros(C)
    for i in top:
        votes[labels[i]] += math.exp(float(sims[i]) / T)
    return votes


def test_knn_hand_case():
    gallery = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 2])
    q = torch.tensor([[1.0, 0.05]])
    votes = knn_classify(q, gallery, labels, 3, k=3, temperature=0.07)
    assert torch.allclose(votes[0], _hand_votes(q[0], gallery, labels, 3, 3, 0.07), rtol=1e-5)
    acc = knn_topk_accuracy(q, torch.tensor([1]), gallery, labels, 3, k=3, topk=(1, 2))
    assert acc == {"top1": 0.0, "top2": 100.0}  # class 0 wins (nearest), class 1 second


def test_knn_top1_matches_sklearn():
    import numpy as np
    from sklearn.neighbors import KNeighborsClassifier

    g = torch.Generator().manual_seed(0)
    C, D, k, T = 7, 16, 20, 0.07
    centers = torch.randn(C, D, generator=g)
    gl = torch.randint(0, C, (300,), generator=g)
    gallery = centers[gl] + 0.8 * torch.randn(300, D, generator=g)
    ql = torch.randint(0, C, (80,), generator=g)
    query = centers[ql] + 0.8 * torch.randn(80, D, generator=g)
    ours = knn_classify(query, gallery, gl, C, k=k, temperature=T).argmax(1)
    # on unit vectors euclidean distance d gives cosine similarity 1 - d²/2, so this callable reproduces
    # the exp(s / T) vote weights exactly
    gn, qn = F.normalize(gallery, dim=1).double().numpy(), F.normalize(query, dim=1).double().numpy()
    clf = KNeighborsClassifier(n_neighbors=k, weights=lambda d: np.exp((1 - d**2 / 2) / T), algorithm="brute")
    clf.fit(gn, gl.numpy())
    theirs = clf.predict(qn)
    assert (ours.numpy() == theirs).all()
    acc = knn_topk_accuracy(query, ql, gallery, gl, C, k=k)
    assert acc["top1"] == pytest.approx(float((theirs == ql.numpy()).mean() * 100))
    assert acc["top5"] >= acc["top1"]


def test_masked_token_metrics_by_hand():
    logits = {"a": torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, 5.0]]), "b": torch.zeros(1, 3)}
    labels = {"a": torch.tensor([0, 0, -100]), "b": torch.tensor([-100])}
    r = masked_token_metrics(logits, labels)
    ce = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(1))) / 2
    assert r["a"]["loss"] == pytest.approx(ce, rel=1e-6)
    assert r["a"]["accuracy"] == 0.5 and r["a"]["count"] == 2
    assert r["b"]["count"] == 0 and math.isnan(r["b"]["loss"])
    pooled = pool_token_metrics([r, masked_token_metrics({"a": torch.tensor([[0.0, 3.0]])}, {"a": torch.tensor([1])})])
    assert pooled["a"]["count"] == 3 and pooled["a"]["accuracy"] == pytest.approx(2 / 3)


def test_masked_token_metrics_match_model_loss(tiny_model):
    """On a masked training batch, the per-modality loss equals the model's own training loss terms."""
    from eval_stage.generate import ModelAdapter
    from train_stage.masking import Masker
    from train_stage.mixture import Component, MixtureConfig
    from train_stage.synthetic_batch import random_raw_batch

    mods = list(tiny_model.config.domains_in)
    raw = random_raw_batch(mods, 4, torch.Generator().manual_seed(0))
    mixture = MixtureConfig(name="test", input_budget=64, target_budget=64, modalities=mods,
                            components=[Component(name="all", weight=1.0, input_alpha={"default": 1.0},
                                                  target_alpha={"default": 1.0})])
    batch = Masker(mixture, mods)(raw, torch.Generator().manual_seed(1))
    r = masked_token_metrics(*ModelAdapter(tiny_model).masked_logits(batch))
    with torch.no_grad():
        out = tiny_model(batch)
    compared = 0
    for i, m in enumerate(tiny_model.config.domains_out):
        if int(out.modality_counts[i]):
            compared += 1
            assert r[m]["count"] == int(out.modality_counts[i])
            assert r[m]["loss"] == pytest.approx(float(out.modality_losses[i]), rel=1e-5)
            assert 0.0 <= r[m]["accuracy"] <= 1.0
    assert compared >= 2
