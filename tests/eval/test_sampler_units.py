"""Token/temperature schedules, logit filtering, span merging."""

from __future__ import annotations

import pytest
import torch

from eval_stage.generate import merge_spans
from eval_stage.generate.inputs import EOS, PAD, SENTINEL0
from eval_stage.generate.sampling import filter_logits, sample
from eval_stage.generate.schedules import temperature_at, tokens_per_step


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_token_schedule_sums_and_never_idles(kind):
    n = torch.tensor([196, 100, 5, 0, 1])
    c = tokens_per_step(n, 8, kind)
    assert c.sum(1).tolist() == n.tolist()
    for row, total in zip(c, n.tolist()):
        filled = row.cumsum(0)
        # every step fills at least one token while any is left
        assert all(int(row[s]) >= 1 for s in range(8) if (filled[s - 1] if s else 0) < total)


def test_cosine_schedule_is_slow_first():
    c = tokens_per_step(torch.tensor([196]), 8, "cosine")[0]
    assert c[0] < c[-1]
    assert tokens_per_step(torch.tensor([196]), 4, "linear")[0].tolist() == [49, 49, 49, 49]


def test_temperature_schedules():
    assert temperature_at(3, 5, 2.0, 0.0, "constant") == 2.0
    assert [temperature_at(i, 5, 2.0, 0.0, "linear") for i in range(5)] == pytest.approx([2, 1.5, 1, 0.5, 0])
    assert temperature_at(0, 5, 2.0, 0.0, "cosine") == pytest.approx(2.0)
    assert temperature_at(2, 5, 2.0, 0.0, "cosine") == pytest.approx(1.0)
    assert temperature_at(4, 5, 2.0, 0.0, "cosine") == pytest.approx(0.0)


def test_top_k_top_p_filtering():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    # nucleus 0.7: 0.5 alone is below, 0.5 + 0.3 reaches it -> keep two
    assert torch.isinf(filter_logits(logits, top_p=0.7)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.5)).tolist() == [[False, True, True, True]]
    g = torch.Generator().manual_seed(0)
    tok, prob = sample(logits.expand(1000, 4), 1.0, g, top_k=2)
    assert set(tok.tolist()) == {0, 1}
    assert torch.allclose(prob[tok == 0], torch.tensor(0.5))  # confidence: before filtering
    greedy, _ = sample(logits, 0.0, g)
    assert greedy.item() == 0


def test_merge_spans_fills_sentinels_in_order():
    """The released models' convention: spans [S_1] .. [S_n], the target closes with [S_{n+1}], [EOS] is a
    token of the sequence (the merged sequence ends before it)."""
    S1, S2, S3 = SENTINEL0 + 1, SENTINEL0 + 2, SENTINEL0 + 3
    given = torch.tensor([[310, S1, 311, S2, PAD], [S1, PAD, PAD, PAD, PAD]])  # ids >= 204: ordinary words
    target = torch.tensor([[S1, 320, 321, S2, 322, EOS, S3, 399], [S1, 330, EOS, S2, 331, PAD, PAD, PAD]])
    out = merge_spans(given, target, max_len=256)
    assert out.tolist() == [[310, 320, 321, 311, 322], [330, PAD, PAD, PAD, PAD]]
    # no input sequence: the whole target body is the sequence (up to its [EOS]); max_len truncates
    assert merge_spans(None, target[1:], 256).tolist() == [[330]]
    assert merge_spans(given[:1], target[:1], 3).tolist() == [[310, 320, 321]]
    # the closing sentinel ends the target even without [EOS]; what follows it is ignored
    assert merge_spans(None, torch.tensor([[S1, 340, 341, S2, 342]]), 256).tolist() == [[340, 341]]


def test_complete_inputs_get_their_eos():
    from eval_stage.generate.inputs import complete_sequences

    x = torch.tensor([[300, 301, PAD], [300, SENTINEL0 + 1, PAD], [300, EOS, PAD], [300, 301, 302]])
    assert complete_sequences(x, 256).tolist() == [[300, 301, EOS, PAD], [300, SENTINEL0 + 1, PAD, PAD],
                                                   [300, EOS, PAD, PAD], [300, 301, 302, EOS]]
    assert complete_sequences(x[3:], 3).tolist() == [[300, 301, 302]]  # full: no room, as in training
