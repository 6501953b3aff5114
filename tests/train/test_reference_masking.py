"""Masking against the reference implementation's data (tests/fixtures/ml4m): the span-masking vectors of
every serialisation case, and the 4M-21 / 4M-7 budget statistics over many draws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fourm_core.modalities import get_modality
from train_stage.batch import MODALITY_INDEX
from train_stage.masking import Masker
from train_stage.mixture import load_mixture
from train_stage.span_masking import draw_kept, input_length, span_mask, target_window, with_eos
from train_stage.synthetic_batch import reference_like_raw_batch

FIXTURES = Path(__file__).parents[1] / "fixtures/ml4m"
VECTORS = json.loads((FIXTURES / "text/text_vectors.json").read_text())
STATS = json.loads((FIXTURES / "masking/masking_stats.json").read_text())["runs"]


def vector_cases():
    for modality, section in VECTORS.items():
        if modality != "meta":
            for case in section["cases"]:
                yield pytest.param(modality, case, id=f"{modality}-{case['name']}")


@pytest.mark.parametrize("modality, case", list(vector_cases()))
def test_span_masking_vectors(modality, case):
    """Given the reference's final keep pattern, budgets and truncation draw, the same input and target ids."""
    m = case["masking"]
    chunked = modality == "metadata"
    ids = [t for c in case["chunk_token_ids"] for t in c] if chunked else case["token_ids"]
    tok, n = with_eos(np.array([ids + [0]]), np.array([len(ids)]), np.array([True]), m["max_tokens"])
    before = [t for c in m["sequence_before_masking"] for t in c] if chunked else m["sequence_before_masking"]
    assert tok[0, : int(n[0])].tolist() == before  # [EOS] appended, truncated to max_tokens (metadata: whole chunks)
    masked = m["span_masking_calls"][-1]["masked"]
    if chunked:  # the keep pattern is per chunk: spread it over the chunk's tokens
        masked = [x for x, c in zip(masked, m["sequence_before_masking"]) for _ in c]
    kept = np.zeros(tok.shape, dtype=bool)
    kept[0, : len(masked)] = ~np.array(masked, dtype=bool)
    budget_in, budget_out = np.array([m["input_budget"]]), np.array([m["target_budget"]])
    sp = span_mask(tok, n, kept, budget_in)
    assert sp.in_ids[0, : int(sp.in_len[0])].tolist() == m["input_ids"]
    # the reference draws the truncation start with np.random.randint(max(1, n_sentinels - 1)) after seeding
    n_choices = max(1, int(sp.n_sent[0]) - 1)
    np.random.seed(m["seed"])
    u = np.array([(np.random.randint(n_choices) + 0.5) / n_choices])
    start, width = target_window(sp.tgt_len, sp.sent_pos, sp.n_sent, budget_out, u)
    assert sp.tgt[0, int(start[0]): int(start[0] + width[0])].tolist() == m["target_ids"]


def test_keep_probability_decays_until_the_input_fits():
    """Inputs over budget are re-masked with keep_prob * 0.9 until they fit; the rest keep their first draw."""
    rng = np.random.default_rng(0)
    B, L = 4000, 60
    n = np.full(B, L)
    budget = np.tile([1, 5, 30, 200], B // 4)
    kept = draw_kept(n, np.full(B, 0.7), budget, L, 1, rng)
    sp = span_mask(np.arange(L)[None].repeat(B, 0) + 300, n, kept, budget)
    assert (sp.in_len <= budget).all()
    # a generous budget never triggers a redraw: those rows keep ~70 % of their tokens
    assert kept[budget == 200].mean() == pytest.approx(0.7, abs=0.01)
    assert kept[budget == 1].sum() == 0  # one token of input: the single sentinel [S_1]
    zero = draw_kept(n[:8], np.full(8, 0.7), np.zeros(8, dtype=np.int64), L, 1, rng)
    assert not zero.any()


def attempt_by_attempt(n: int, p: float, budget: int, L: int, chunk: int, N: int, rng) -> np.ndarray:
    """The reference's decay as written: whole Bernoulli patterns, keep_prob * 0.9 until the input fits."""
    valid = np.broadcast_to(np.arange(L) < n, (N, L))
    unit = np.arange(L) // chunk
    kept = np.zeros((N, L), dtype=bool)
    todo, prob = np.arange(N), p
    while todo.size:
        draw = (rng.random((todo.size, -(-L // chunk)), dtype=np.float32) <= np.float32(prob))[:, unit] & valid[todo]
        fits = input_length(draw, valid[todo]) <= budget
        kept[todo[fits]] = draw[fits]
        todo, prob = todo[~fits], prob * 0.9
    return kept


@pytest.mark.parametrize("n, p, budget, chunk", [(60, 0.7, 5, 1), (37, 0.5, 9, 2), (9, 0.3, 4, 2), (21, 1.0, 10, 1)])
def test_decay_has_the_attempt_by_attempt_distribution(n, p, budget, chunk):
    """draw_kept screens attempts by (kept count, span count) and realises one pattern per row: the kept
    patterns must be distributed as the reference's attempt-by-attempt redraws (chunk 2 with an odd length:
    metadata's lone [EOS] unit)."""
    N, L = 6000, n + 3
    rng = np.random.default_rng(0)
    fast = draw_kept(np.full(N, n), np.full(N, p), np.full(N, budget), L, chunk, rng)
    slow = attempt_by_attempt(n, p, budget, L, chunk, N, rng)
    valid = np.broadcast_to(np.arange(L) < n, (N, L))
    for stat in (lambda k: input_length(k, valid), lambda k: k.sum(1)):
        a, b = stat(fast), stat(slow)
        cdf = [np.searchsorted(np.sort(x), np.arange(L + 1), side="right") / N for x in (a, b)]
        assert np.abs(cdf[0] - cdf[1]).max() < 1.63 * np.sqrt(2 / N)  # two-sample KS at 1 %
    # every position is kept equally often, as by the Bernoulli draws
    assert np.abs(fast.mean(0) - slow.mean(0)).max() < 5 * np.sqrt(0.25 / N) * np.sqrt(2)
    assert (input_length(fast, valid) <= budget).all()


@pytest.mark.parametrize("run, preset", [("4M-21_256_256", "4m21"), ("4M-7_128_128", "4m7")])
def test_budget_statistics_match_the_reference(run, preset):
    """Per-modality mean token counts of image-like modalities (they do not depend on the synthetic inputs)
    and the totals, over 5000 samples, against the reference's 5000."""
    ref = STATS[run]
    budget = int(run.split("_")[1])
    mix = load_mixture(preset).model_copy(update={"input_budget": budget, "target_budget": budget})
    assert mix.budget_mode == "reference"
    masker = Masker(mix)
    g = torch.Generator().manual_seed(0)
    counts = {m: ([], []) for m in mix.modalities}
    totals = ([], [])
    for _ in range(10):
        b = masker(reference_like_raw_batch(mix.modalities, 500, g), g)
        for m in mix.modalities:
            counts[m][0].append(((b.enc_modality == MODALITY_INDEX[m]) & b.enc_valid).sum(1))
            counts[m][1].append(((b.dec_modality == MODALITY_INDEX[m]) & b.dec_valid).sum(1))
        totals[0].append(b.enc_valid.sum(1))
        totals[1].append(b.dec_valid.sum(1))
    for m in mix.modalities:
        stats = ref["per_modality"][m]
        for side, key in ((0, "input"), (1, "target")):
            x = torch.cat(counts[m][side]).double()
            mean, std = stats[f"{key}_mean"], stats[f"{key}_std"]
            tol = 5 * max(std, 1.0) / np.sqrt(5000) * np.sqrt(2)  # two independent 5000-sample means
            if get_modality(m).is_image_like:
                assert float(x.mean()) == pytest.approx(mean, abs=tol), (m, key)
                assert float((x == 0).double().mean()) == pytest.approx(stats[f"{key}_zero_frac"], abs=0.04), (m, key)
            elif stats[f"{key}_mean"] == 0:
                assert float(x.mean()) == 0, (m, key)
    # the reference counts every target token; a sequence target's last token takes no decoder slot (it has
    # nothing to predict, the reference's decoder skips it too), so each non-empty sequence target has one less
    closing = sum(1 - ref["per_modality"][m]["target_zero_frac"] for m in mix.modalities
                  if not get_modality(m).is_image_like)
    for side, key in ((0, "input"), (1, "target")):
        x = torch.cat(totals[side]).double()
        expected = ref["total"][f"{key}_mean"] - (closing if side else 0)
        assert float(x.mean()) == pytest.approx(expected, rel=0.06), key
        if side == 0:
            assert float((x < budget).double().mean()) == pytest.approx(ref["frac_input_under_budget"], abs=0.05)
        assert int(x.max()) <= budget
