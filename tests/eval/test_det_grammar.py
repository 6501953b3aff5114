"""The det grammar of constrained decoding (eval_stage.generate.det_grammar): what it allows, and that a random
model decoded under it writes only well-formed box lists."""

from __future__ import annotations

import torch

from eval_stage.generate import TargetStep, generate
from eval_stage.generate.det_grammar import det_allowed, det_grammar
from eval_stage.generate.inputs import EOS, PAD, SENTINEL0
from tokenize_stage.text.vocab import CLASS_OFFSET, CLASS_TOKENS, NUM_VALUES, VALUE_OFFSET, value_token_id

V = 30000
S1, S2 = SENTINEL0 + 1, SENTINEL0 + 2
CLASSES = set(range(CLASS_OFFSET, CLASS_OFFSET + len(CLASS_TOKENS)))


def _allowed(prefix: list[int]) -> set[int]:
    target = torch.tensor([[S1, *prefix]])
    return set(torch.nonzero(det_allowed(target, len(prefix), V, torch.tensor([S2]))[0])[:, 0].tolist())


def test_each_slot_of_a_box_allows_only_its_token_kind():
    assert _allowed([]) == {EOS} | {value_token_id(0, v) for v in range(NUM_VALUES)}
    assert _allowed([value_token_id(0, 100)]) == {value_token_id(1, v) for v in range(NUM_VALUES)}
    box = [value_token_id(0, 100), value_token_id(1, 50)]
    assert _allowed(box) == {value_token_id(2, v) for v in range(100, NUM_VALUES)}  # x1 >= x0
    assert _allowed(box + [value_token_id(2, 300)]) == {value_token_id(3, v) for v in range(50, NUM_VALUES)}
    box += [value_token_id(2, 300), value_token_id(3, 70)]
    assert _allowed(box) == CLASSES
    assert _allowed(box + [CLASS_OFFSET]) == {EOS} | {value_token_id(0, v) for v in range(NUM_VALUES)}
    assert _allowed(box + [CLASS_OFFSET, EOS]) == {S2}  # after [EOS] only the closing sentinel


def test_a_random_model_under_the_grammar_writes_well_formed_boxes():
    from train_stage.model import FourM, preset

    torch.manual_seed(0)
    model = FourM(preset("tiny", ["rgb@224", "det"], dim=32, num_heads=2)).eval()
    rgb = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    rows = generate(model, {"rgb@224": rgb}, [TargetStep("det", temperature=1.0, max_new_tokens=31,
                                                          process=det_grammar())], seed=3)["det"]
    boxes = 0
    for row in rows.tolist():
        row = [t for t in row if t != PAD]
        # merge_spans cut the [EOS]: whole boxes, unless max_new_tokens stopped the row inside one
        assert len(row) % 5 == 0 or len(row) == 31
        for i in range(0, len(row) - len(row) % 5, 5):
            x0, y0, x1, y1, c = row[i: i + 5]
            assert [(t - VALUE_OFFSET) // NUM_VALUES for t in (x0, y0, x1, y1)] == [0, 1, 2, 3]
            assert x1 - x0 >= 2 * NUM_VALUES and y1 - y0 >= 2 * NUM_VALUES and c in CLASSES
            boxes += 1
    assert boxes > 0


def test_generate_boxes_bounds_the_count_and_scores_each_box_by_its_class_token():
    from eval_stage.boxes_eval import generate_boxes
    from eval_stage.config import load_eval_config
    from tokenize_stage.captions import text_tokenizer
    from train_stage.model import FourM, preset

    torch.manual_seed(0)
    model = FourM(preset("tiny", ["rgb@224", "det"], dim=32, num_heads=2)).eval()
    keys = ["a", "b", "c"]
    inputs = {"rgb@224": torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))}
    tok, _ = text_tokenizer(None)
    cfg = load_eval_config("demo", {"batch_size": 2})
    for coordinates in ("greedy", "median"):
        got = generate_boxes(model, cfg, keys, ["c", "a"], inputs, tok, min_boxes=2, max_boxes=3,
                             coordinates=coordinates)
        assert set(got) == {"c", "a"}
        for boxes in got.values():
            assert 2 <= len(boxes) <= 3
            for (x0, y0, x1, y1), name, score in boxes:
                assert 0 <= x0 <= x1 <= 1 and 0 <= y0 <= y1 <= 1 and name in CLASS_TOKENS and 0 < score <= 1
