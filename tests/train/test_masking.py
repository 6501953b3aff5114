"""Masking properties over many draws (4M-FACTS §5)."""

from __future__ import annotations

import gc
import pickle
from multiprocessing.reduction import ForkingPickler

import numpy as np
import pydantic
import pytest
import torch

from fourm_core.config import ConfigError
from fourm_core.modalities import FOURM21, get_modality
from train_stage.batch import IGNORE, MODALITY_INDEX
from train_stage.masking import EOS, SENTINEL0, Masker, allocate, sample_dirichlet, split_cells
from train_stage.mixture import MixtureConfig, load_data_mix, load_mixture
from train_stage.synthetic_batch import random_raw_batch


def mixture(mods, alpha_in=None, alpha_out=None, budget=(256, 256), keep=None, **kw):
    comp = {"name": "c", "weight": 1, "input_alpha": alpha_in or {"default": 1.0},
            "target_alpha": alpha_out or {"default": 1.0}}
    if keep:
        comp["keep"] = keep
    return MixtureConfig(name="t", modalities=mods, input_budget=budget[0], target_budget=budget[1],
                         components=[comp], **kw)


def raw(mods, B=64, seed=0, **kw):
    return random_raw_batch(mods, B, torch.Generator().manual_seed(seed), t5_dim=8, **kw)


def per_modality_counts(modality, valid, mods):
    return {m: ((modality == MODALITY_INDEX[m]) & valid).sum(1) for m in mods}


def test_presets_validate_and_bad_values_fail():
    m21 = load_mixture("4m21")
    assert [c.weight for c in m21.components] == [1, 1, 1, 1, 1, 0.5, 0.5]
    assert m21.modalities == list(FOURM21)
    assert load_mixture("4m7").modalities[0] == "rgb@224"
    assert [d.weight for d in load_data_mix("4m21_data").datasets] == [0.6, 0.2, 0.2]
    with pytest.raises(pydantic.ValidationError, match="alpha must be >= 0"):
        mixture(["caption"], alpha_in={"default": -1.0})
    with pytest.raises(pydantic.ValidationError, match="budget_mode"):
        mixture(["caption"], budget_mode="greedy")
    with pytest.raises(ValueError, match="same budget_mode"):
        Masker([mixture(["caption"]), mixture(["caption"], budget_mode="fill")])
    with pytest.raises(ConfigError):
        load_mixture("no_such_preset")


def test_allocate_exact_capped_and_redistributed():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        p = torch.rand(128, 9, generator=g) * (torch.rand(128, 9, generator=g) > 0.3)
        cap = torch.randint(0, 80, (128, 9), generator=g)
        k = allocate(p, cap, 256)
        assert (k <= cap).all() and (k >= 0).all()
        assert (k[p == 0] == 0).all()
        expected = torch.minimum(torch.tensor(256), torch.where(p > 0, cap, 0).sum(1))
        assert torch.equal(k.sum(1), expected)
    # one modality with a small cap: its excess goes to the others in proportion
    k = allocate(torch.tensor([[0.5, 0.25, 0.25]]), torch.tensor([[10, 1000, 1000]]), 100)
    assert k.tolist() == [[10, 45, 45]]


def test_dirichlet_alpha_zero_and_tiny_alpha():
    g = torch.Generator().manual_seed(0)
    alpha = torch.tensor([[0.0, 0.01, 0.01], [0.0, 0.0, 0.0], [1.0, 0.0, 1.0]]).repeat(100, 1)
    p = sample_dirichlet(alpha, g)
    assert (p[alpha == 0] == 0).all()
    sums = p.sum(1)
    has = (alpha > 0).any(1)
    assert torch.allclose(sums[has], torch.ones_like(sums[has]))
    assert (sums[~has] == 0).all()


@pytest.mark.parametrize("mode", ["reference", "fill"])
@pytest.mark.parametrize("preset", ["4m21", "4m7"])
def test_budgets_caps_and_disjoint_image_positions(preset, mode):
    mix = load_mixture(preset).model_copy(update={"budget_mode": mode})
    mods = mix.modalities
    masker = Masker(mix)
    for seed in range(3):
        r = raw(mods, B=96, seed=seed, full_sequences=True)
        b = masker(r, torch.Generator().manual_seed(100 + seed))
        assert b.enc_tokens.shape == (96, mix.input_budget) and b.dec_tokens.shape == (96, mix.target_budget)
        n_in = b.enc_valid.sum(1)
        if mode == "fill":
            # full samples have enough tokens: budgets are filled exactly, except in the rgb-to-all component,
            # whose only input (196 rgb patches) is smaller than the budget
            only_rgb = ((b.enc_modality == MODALITY_INDEX["rgb@224"]) | ~b.enc_valid).all(1)
            assert ((n_in == mix.input_budget) | (only_rgb & (n_in == 196))).all()
        else:  # reference: capped Dirichlet shares, what a cap removes stays unused
            assert (n_in <= mix.input_budget).all() and (n_in < mix.input_budget).float().mean() > 0.3
        assert (b.dec_valid.sum(1) <= mix.target_budget).all()
        for m, c in per_modality_counts(b.enc_modality, b.enc_valid, mods).items():
            assert (c <= r.lengths[m] + 1).all()  # sequences: + [EOS]
        # image-like: input and target cells are disjoint, and target tokens equal the grid's tokens
        for m in mods:
            mid = MODALITY_INDEX[m]
            if m not in r.tokens or m in ("caption", "det", "metadata", "color_palette", "human_poses",
                                          "sam_instance"):
                continue
            for i in range(96):
                pin = set(b.enc_positions[i][b.enc_modality[i] == mid].tolist())
                pout = b.dec_positions[i][b.dec_modality[i] == mid]
                assert not pin & set(pout.tolist())
                assert torch.equal(b.dec_labels[i][b.dec_modality[i] == mid], r.tokens[m][i, pout])
        assert (b.dec_labels[~b.dec_valid] == IGNORE).all()
        assert (b.enc_modality[~b.enc_valid] == -1).all()


def test_alpha_zero_gives_no_tokens():
    mods = ["caption", "tok_depth@224", "tok_rgb@224", "t5_caption"]
    mix = mixture(mods, alpha_in={"default": 0.0, "tok_depth@224": 1.0},
                  alpha_out={"default": 0.0, "tok_rgb@224": 1.0})
    b = Masker(mix)(raw(mods), torch.Generator().manual_seed(0))
    assert set(b.enc_modality[b.enc_valid].unique().tolist()) == {MODALITY_INDEX["tok_depth@224"]}
    assert set(b.dec_modality[b.dec_valid].unique().tolist()) == {MODALITY_INDEX["tok_rgb@224"]}
    # absent modalities (length 0) get nothing either
    r = raw(mods)
    r.lengths["tok_depth@224"][:] = 0
    b = Masker(mixture(mods))(r, torch.Generator().manual_seed(0))
    assert not (b.enc_modality == MODALITY_INDEX["tok_depth@224"]).any()
    assert not (b.dec_modality == MODALITY_INDEX["tok_depth@224"]).any()


def test_deterministic_under_seed():
    mix = load_mixture("4m21")
    masker = Masker(mix)
    r = raw(mix.modalities, B=16)
    a = masker(r, torch.Generator().manual_seed(5))
    b = masker(r, torch.Generator().manual_seed(5))
    c = masker(r, torch.Generator().manual_seed(6))
    for f in ("enc_tokens", "enc_positions", "enc_modality", "dec_tokens", "dec_labels", "dec_modality"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert not torch.equal(a.enc_tokens, c.enc_tokens)


def test_masker_sent_to_a_loader_worker_masks_as_before():
    """DataLoader workers receive the masker through torch's ForkingPickler, which moves tensors into shared
    memory: the masker's numpy tables must survive that, on both sides (a stale view gave garbage caps here,
    k_in + k_out > 196 for an image grid, and the worker looped forever)."""
    mix = load_mixture("4m21")
    masker = Masker(mix)
    r = raw(mix.modalities, B=16)
    before = masker(r, torch.Generator().manual_seed(5))
    sent = pickle.loads(ForkingPickler.dumps(masker))
    gc.collect()
    junk = [torch.randn(4096) for _ in range(64)]  # reuse any freed buffer
    for m in (sent, masker):
        assert m._is_image.tolist() == [get_modality(x).is_image_like for x in mix.modalities]
        assert m._max_tokens.tolist() == [get_modality(x).max_tokens for x in mix.modalities]
        after = m(r, torch.Generator().manual_seed(5))
        for f in ("enc_tokens", "enc_positions", "enc_modality", "dec_tokens", "dec_labels", "dec_modality"):
            assert torch.equal(getattr(before, f), getattr(after, f)), f
    del junk


def test_mixture_and_dataset_weights_respected():
    mix = load_mixture("4m21")
    c4 = load_mixture("c4_caption")
    masker = Masker([mix, c4])
    g = torch.Generator().manual_seed(0)
    n = 40_000
    comp = masker.sample_components(torch.zeros(n, dtype=torch.long), g)
    freq = torch.bincount(comp, minlength=len(masker.component_names)).double() / n
    expected = torch.tensor([1, 1, 1, 1, 1, 0.5, 0.5, 0], dtype=torch.float64) / 6
    assert torch.allclose(freq, expected, atol=0.01)
    comp = masker.sample_components(torch.ones(1000, dtype=torch.long), g)
    assert (comp == len(mix.components)).all()  # the C4 dataset only uses its own component


def reconstruct(inp: list[int], tgt: list[int]) -> list[int]:
    """Undo T5 span masking: put each sentinel's span from the target back into the input."""
    spans, cur = {}, None
    for t in tgt:
        if SENTINEL0 <= t < SENTINEL0 + 200:
            cur = t
            spans[cur] = []
        else:
            spans[cur].append(t)
    out = []
    for t in inp:
        out.extend(spans[t] if t in spans else [t])
    return out


@pytest.mark.parametrize("modality", ["caption", "metadata"])
def test_sentinel_structure_reconstructs_sequence(modality):
    mods = [modality]
    masker = Masker(mixture(mods, budget=(300, 300)))
    r = raw(mods, B=64, seed=1)
    # short enough that no target exceeds its cap (max_tokens) and gets cut
    r.lengths[modality] = r.lengths[modality].clamp(max=min(100, get_modality(modality).max_tokens // 2 - 4)) // 2 * 2 + 2
    b = masker(r, torch.Generator().manual_seed(2))
    mid = MODALITY_INDEX[modality]
    n_masked = 0
    for i in range(64):
        inp = b.enc_tokens[i][b.enc_modality[i] == mid].tolist()
        sel = b.dec_modality[i] == mid
        # decoder slots carry the target but its last token, which only appears as the last label
        labels = b.dec_labels[i][sel].tolist()
        tgt = b.dec_tokens[i][sel].tolist() + labels[-1:]
        # the reference's convention: spans are [S_1] .. [S_n], the target ends with [S_{n+1}], [EOS] is part
        # of the sequence (in the input or in a span)
        n_spans = sum(SENTINEL0 <= t < SENTINEL0 + 200 for t in inp)
        if not tgt:  # nothing masked: the target is "[S_1]" alone, which takes no decoder slot
            assert n_spans == 0
            tgt = [SENTINEL0 + 1]
        assert tgt[0] == SENTINEL0 + 1 and tgt[-1] == SENTINEL0 + n_spans + 1
        # labels are the next target token; the closing sentinel has no slot of its own
        assert labels == tgt[1:] and IGNORE not in labels
        n_masked += n_spans > 0
        original = r.tokens[modality][i, : int(r.lengths[modality][i])].tolist() + [EOS]
        assert reconstruct(inp, tgt) == original[: get_modality(modality).max_tokens]
        # input positions count only the kept tokens
        assert b.enc_positions[i][b.enc_modality[i] == mid].tolist() == list(range(len(inp)))
        if modality == "metadata":  # chunk-wise: every masked span covers whole key/value pairs
            assert len(reconstruct(inp, tgt)) % 2 == 1  # key/value pairs + [EOS]
            body = [t for t in tgt if not (SENTINEL0 <= t < SENTINEL0 + 200) and t != EOS]
            assert len(body) % 2 == 0  # [EOS] is a chunk of its own
    assert n_masked > 20


def test_t5_embeddings_input_only_with_zeroed_spans():
    mods = ["t5_caption", "caption"]
    mix = mixture(mods, budget=(200, 64))
    r = raw(mods, B=32)
    b = Masker(mix)(r, torch.Generator().manual_seed(0))
    mid = MODALITY_INDEX["t5_caption"]
    assert not (b.dec_modality == mid).any()
    rows = b.enc_tokens[b.enc_modality == mid]
    L = r.embeddings["t5_caption"].shape[1]
    assert (rows <= L).all() and (rows == L).any()  # row L = a masked span (zero vector)


def test_keep_all_puts_the_whole_caption_in_the_input():
    mods = ["caption", "tok_depth@224"]
    mix = mixture(mods, keep={"default": "random", "caption": "all"}, alpha_in={"default": 0.05, "caption": 5.0},
                  alpha_out={"default": 1.0, "caption": 0.0})
    r = raw(mods, B=32)
    r.lengths["caption"] = r.lengths["caption"].clamp(max=30)
    b = Masker(mix)(r, torch.Generator().manual_seed(0))
    mid = MODALITY_INDEX["caption"]
    assert not (b.dec_modality == mid).any()
    for i in range(32):
        got = b.enc_tokens[i][b.enc_modality[i] == mid].tolist()
        assert got == r.tokens["caption"][i, : int(r.lengths["caption"][i])].tolist() + [EOS]
        assert not any(SENTINEL0 <= t < SENTINEL0 + 200 for t in got)


def test_unpadded_sequence_narrower_than_half_the_budget():
    """A direct caller may pass a sequence tensor only as wide as its longest sample (2W + 1 <= max_tokens)."""
    mods = ["caption", "tok_depth@224"]
    rebuilt = 0
    for mode in ("reference", "fill"):
        r = raw(mods, B=8)
        r.tokens["caption"] = r.tokens["caption"][:, :10]
        r.lengths["caption"] = r.lengths["caption"].clamp(max=10)
        b = Masker(mixture(mods, budget_mode=mode))(r, torch.Generator().manual_seed(0))
        mid = MODALITY_INDEX["caption"]
        for i in range(8):
            inp = b.enc_tokens[i][b.enc_modality[i] == mid].tolist()
            sel = b.dec_modality[i] == mid
            tgt = b.dec_tokens[i][sel].tolist() + b.dec_labels[i][sel].tolist()[-1:]
            # a whole target (not cut to a window: from [S_1] to the sentinel after the input's last) rebuilds it
            whole = len(tgt) and tgt[0] == SENTINEL0 + 1
            if whole and tgt[-1] - SENTINEL0 == sum(SENTINEL0 <= t < SENTINEL0 + 200 for t in inp) + 1:
                assert reconstruct(inp, tgt) == r.tokens["caption"][i, : int(r.lengths["caption"][i])].tolist() + [EOS]
                rebuilt += 1
    assert rebuilt >= 4


def test_fill_mode_uses_more_tokens_than_reference():
    """The named option "fill" redistributes what caps remove: more tokens per step than "reference"."""
    mix = load_mixture("4m21")
    r = raw(mix.modalities, B=256, seed=3)
    used = {}
    for mode in ("reference", "fill"):
        b = Masker(mix.model_copy(update={"budget_mode": mode}))(r, torch.Generator().manual_seed(1))
        used[mode] = b.n_tokens() / 256
    assert used["fill"] > used["reference"] + 40


def test_image_cells_exact_counts_and_uniform():
    """split_cells: exactly k_in input and k_all - k_in target cells per grid, every cell equally likely."""
    rng = np.random.default_rng(0)
    B, L = 4000, 16
    k_in = rng.integers(0, L + 1, B)
    k_all = k_in + rng.integers(0, L + 1 - k_in)
    f, is_in = split_cells(k_in, k_all, L, rng)
    assert (np.diff(f) > 0).all()  # sorted, each cell at most once: inputs and targets are disjoint
    row, cell = np.divmod(f, L)
    assert np.array_equal(np.bincount(row[is_in], minlength=B), k_in)
    assert np.array_equal(np.bincount(row, minlength=B), k_all)
    # P(cell is an input) = k_in / L for every cell
    expected = k_in.sum() / L
    freq = np.bincount(cell[is_in], minlength=L)
    assert np.abs(freq - expected).max() < 5 * np.sqrt(expected)


@pytest.mark.parametrize("mode", ["reference", "fill"])
def test_sequence_targets_name_only_sentinels_their_input_shows(mode):
    """A span's target is only asked for when its sentinel is in the input: a target sentinel is one the
    encoder saw, or the one after the last it saw (which closes the last span). In fill mode an input cut to
    its budget drops its later sentinels, so the target is cut with it."""
    mix = load_mixture("4m21").model_copy(update={"budget_mode": mode})
    masker = Masker(mix)
    seqs = [m for m in ("caption", "det", "metadata", "color_palette", "human_poses", "sam_instance")
            if m in mix.modalities]
    checked = whole = 0
    for seed in range(4):
        r = raw(mix.modalities, B=96, seed=seed, full_sequences=True)
        b = masker(r, torch.Generator().manual_seed(200 + seed))
        for m in seqs:
            mid = MODALITY_INDEX[m]
            for i in range(96):
                enc = b.enc_tokens[i][(b.enc_modality[i] == mid) & b.enc_valid[i]]
                seen = enc[(enc >= SENTINEL0) & (enc < SENTINEL0 + 200)]
                dec = b.dec_labels[i][(b.dec_modality[i] == mid) & b.dec_valid[i]]
                asked = dec[(dec >= SENTINEL0) & (dec < SENTINEL0 + 200)]
                if not asked.numel():
                    continue
                checked += 1
                if not enc.numel():  # no input of it: the whole sequence, [S_1] ... [S_2]
                    assert asked.tolist() == [SENTINEL0 + 2] and dec[0] != SENTINEL0 + 2, (m, i, dec.tolist())
                    whole += 1
                    continue
                last = int(seen.max()) if seen.numel() else SENTINEL0 - 1
                assert int(asked.max()) <= last + 1, (m, i, seen.tolist(), asked.tolist())
    assert checked > 150 and (whole > 10 or mode == "reference")  # reference: a long whole target is windowed
