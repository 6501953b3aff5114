"""Box AP by hand and against pycocotools' COCOeval."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch

from eval_stage.metrics.boxes import Boxes, box_ap, box_iou, class_agnostic, class_f1


def test_box_iou_hand():
    a = torch.tensor([[0.0, 0, 2, 2]])
    b = torch.tensor([[1.0, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]])
    assert box_iou(a, b)[0].tolist() == pytest.approx([1 / 7, 1.0, 0.0])


def test_class_f1_and_class_agnostic_ap_hand_case():
    gt = [Boxes(torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), torch.tensor([1, 2])),
          Boxes(torch.tensor([[0.0, 0, 5, 5]]), torch.tensor([3]))]
    # image 1: the right places, the classes swapped for 2 and 1 twice; image 2: nothing predicted
    pred = [Boxes(torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]), torch.tensor([2, 1, 1]),
                  torch.tensor([0.9, 0.8, 0.7])),
            Boxes(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0))]
    # class multisets {1, 2} vs {2, 1, 1}: 2 hits, 1 false positive; {3} vs {}: 1 miss -> F1 = 4 / (4 + 1 + 1)
    assert class_f1(pred, gt) == pytest.approx(4 / 6)
    assert box_ap(pred, gt)["ap50"] == 0.0  # no box has its class where that class is
    # class-blind: 2 of 3 objects found by the two best-scored boxes -> recall 2/3 at precision 1
    agn = box_ap([class_agnostic(p) for p in pred], [class_agnostic(g) for g in gt])
    assert agn["ap50"] == pytest.approx(67 / 101)
    assert class_f1(pred[1:], pred[1:]) != class_f1(pred[1:], pred[1:])  # NaN: no box on either side


def test_ap_hand_case():
    gt = [Boxes(torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), torch.tensor([1, 1]))]
    # best-scored detection is a false positive, then one hit; the second gt is never found
    pred = [Boxes(torch.tensor([[50.0, 50, 60, 60], [0, 0, 10, 10]]), torch.tensor([1, 1]), torch.tensor([0.9, 0.8]))]
    r = box_ap(pred, gt)
    # recall reaches 0.5 with precision 0.5: recall points 0..0.5 (51 of 101) read 0.5, the rest 0
    assert r["ap50"] == pytest.approx(0.5 * 51 / 101)
    assert r["ap"] == pytest.approx(r["ap50"])  # the hit is exact, so every IoU threshold agrees
    perfect = [Boxes(gt[0].boxes, gt[0].labels, torch.tensor([0.5, 0.4]))]
    assert box_ap(perfect, gt)["ap"] == pytest.approx(1.0)


def _random_case(seed: int, n_img: int = 6, n_cls: int = 3):
    g = torch.Generator().manual_seed(seed)
    preds, gts = [], []
    for _ in range(n_img):
        m = int(torch.randint(1, 5, (1,), generator=g))
        xy = torch.rand(m, 2, generator=g) * 80
        wh = torch.rand(m, 2, generator=g) * 30 + 5
        gb = torch.cat([xy, xy + wh], 1).round()
        gl = torch.randint(0, n_cls, (m,), generator=g)
        # predictions: jittered copies of some gt boxes (various IoUs), some with wrong class, plus clutter
        keep = torch.rand(m, generator=g) < 0.8
        pb = gb[keep] + torch.randn(int(keep.sum()), 4, generator=g) * 3
        pb = torch.cat([torch.minimum(pb[:, :2], pb[:, 2:]), torch.maximum(pb[:, :2], pb[:, 2:]) + 1], 1)  # valid xyxy
        pl = torch.where(torch.rand(len(pb), generator=g) < 0.85, gl[keep], torch.randint(0, n_cls, (len(pb),),
                                                                                          generator=g))
        n_fp = int(torch.randint(0, 3, (1,), generator=g))
        fxy = torch.rand(n_fp, 2, generator=g) * 80
        pb = torch.cat([pb, torch.cat([fxy, fxy + 10], 1)]).round()
        pl = torch.cat([pl, torch.randint(0, n_cls, (n_fp,), generator=g)])
        ps = torch.rand(len(pb), generator=g)  # distinct scores: no tie-order ambiguity
        preds.append(Boxes(pb, pl, ps))
        gts.append(Boxes(gb, gl))
    return preds, gts


def _cocoeval(preds, gts):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, dets = [], [], []
    classes = sorted({int(c) for g in gts for c in g.labels})
    for i, (p, g) in enumerate(zip(preds, gts)):
        images.append({"id": i, "width": 200, "height": 200})
        for b, c in zip(g.boxes.tolist(), g.labels.tolist()):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "bbox": [b[0], b[1], w, h],
                         "area": w * h, "iscrowd": 0})
        for b, c, s in zip(p.boxes.tolist(), p.labels.tolist(), p.scores.tolist()):
            dets.append({"image_id": i, "category_id": c, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in classes]}
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats  # [AP, AP50, AP75, ...]


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_ap_matches_pycocotools(seed):
    preds, gts = _random_case(seed)
    ours = box_ap(preds, gts)
    stats = _cocoeval(preds, gts)
    assert ours["ap"] == pytest.approx(stats[0], abs=1e-9)
    assert ours["ap50"] == pytest.approx(stats[1], abs=1e-9)
    assert ours["ap75"] == pytest.approx(stats[2], abs=1e-9)
