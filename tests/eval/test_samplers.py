"""Sampler invariants on a tiny random-init 4M model (issue 7 tests)."""

from __future__ import annotations

import pytest
import torch

from eval_stage.generate import (Condition, ModelAdapter, TargetStep, build_slots, decode_image_tokens,
                                 decode_sequence, generate, run_step)
from eval_stage.generate.inputs import PAD, SENTINEL0
from eval_stage.generate.schedules import tokens_per_step

B = 3


def _rgb(seed=0):
    return torch.randn(B, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def _partial_depth(seed=1):
    """Depth tokens with a different random set of known positions per sample (-1 = unknown)."""
    g = torch.Generator().manual_seed(seed)
    tok = torch.randint(0, 8192, (B, 196), generator=g)
    known = torch.rand(B, 196, generator=g) < torch.tensor([[0.0], [0.3], [0.7]])
    return torch.where(known, tok, -1)


@pytest.mark.parametrize("method", ["maskgit", "roar"])
def test_every_masked_position_filled_exactly_once_inputs_untouched(tiny_model, method):
    adapter = ModelAdapter(tiny_model)
    depth = _partial_depth()
    state = {"rgb@224": _rgb(), "tok_depth@224": depth}
    steps = 6
    tokens, fill_step = decode_image_tokens(adapter, state, "tok_depth@224", B, torch.Generator().manual_seed(0),
                                            method=method, steps=steps)
    unknown = depth == -1
    assert torch.equal(tokens[~unknown], depth[~unknown])  # given tokens untouched
    assert bool((fill_step[unknown] >= 0).all()) and bool((fill_step[~unknown] == -1).all())
    assert bool((tokens >= 0).all()) and bool((tokens < 8192).all())
    # each step filled exactly the scheduled number of positions (a position is filled in one step only)
    expected = tokens_per_step(unknown.sum(1), steps, "cosine")
    got = torch.stack([(fill_step == s).sum(1) for s in range(steps)], 1)
    assert torch.equal(got, expected)
    assert torch.equal(state["tok_depth@224"], depth)  # the caller's tensor is not modified


def test_deterministic_under_seed(tiny_model):
    steps = [TargetStep("tok_depth@224", steps=3), TargetStep("caption", max_new_tokens=6),
             TargetStep("tok_dinov2_global", decoding="roar", steps=2)]
    a = generate(tiny_model, {"rgb@224": _rgb()}, steps, seed=7)
    b = generate(tiny_model, {"rgb@224": _rgb()}, steps, seed=7)
    c = generate(tiny_model, {"rgb@224": _rgb()}, steps, seed=8)
    for m in ("tok_depth@224", "caption", "tok_dinov2_global"):
        assert torch.equal(a[m], b[m])
    assert not torch.equal(a["tok_depth@224"], c["tok_depth@224"])


def test_guidance_scale_one_is_conditional_and_zero_is_unconditional(tiny_model):
    """CFG: logits = uncond + s (cond - uncond). s = 1 must equal the plain conditional pass; s = 0 must
    equal generation with the conditioning inputs removed (the target's own known tokens stay)."""
    depth = _partial_depth()
    depth[0, :10] = 5  # every sample has some known tokens, so the unconditional pass has an input
    inputs = {"rgb@224": _rgb(), "tok_depth@224": depth}
    step = dict(modality="tok_depth@224", steps=3)
    plain = generate(tiny_model, inputs, [TargetStep(**step)], seed=3)["tok_depth@224"]
    s1 = generate(tiny_model, inputs, [TargetStep(**step, guidance_scale=1.0)], seed=3)["tok_depth@224"]
    assert torch.equal(plain, s1)
    s0 = generate(tiny_model, inputs, [TargetStep(**step, guidance_scale=0.0)], seed=3)["tok_depth@224"]
    uncond = generate(tiny_model, {"tok_depth@224": depth}, [TargetStep(**step)], seed=3)["tok_depth@224"]
    assert torch.equal(s0, uncond)
    s3 = generate(tiny_model, inputs, [TargetStep(**step, guidance_scale=3.0)], seed=3)["tok_depth@224"]
    assert not torch.equal(s3, plain)


def test_weighted_guidance_reduces_to_single_condition(tiny_model):
    """Σ_c w_c (cond_c − uncond) with one condition of weight s is CFG with scale s; with weights
    (1, 0) over two conditions it is the conditional pass on the first condition alone."""
    inputs = {"rgb@224": _rgb(), "caption": torch.tensor([[300, 301, 302]] * B)}
    step = dict(modality="caption", max_new_tokens=5, temperature=0.0)
    a = generate(tiny_model, inputs, [TargetStep(**step, guidance_scale=2.0)], seed=0)["caption"]
    b = generate(tiny_model, inputs, [TargetStep(**step, conditions=[Condition(("rgb@224",), 2.0)])], seed=0)["caption"]
    assert torch.equal(a, b)  # the target's own tokens are never a condition, so both drop only rgb
    two = [Condition(("rgb@224",), 1.0), Condition(("tok_depth@224",), 0.0)]
    inputs3 = {**inputs, "tok_depth@224": torch.randint(0, 8192, (B, 196), generator=torch.Generator().manual_seed(2))}
    c = generate(tiny_model, inputs3, [TargetStep(**step, conditions=two)], seed=0)["caption"]
    d = generate(tiny_model, inputs, [TargetStep(**step)], seed=0)["caption"]
    assert torch.equal(c, d)


@pytest.mark.parametrize("temperature,guided", [(0.0, False), (1.0, False), (1.0, True)])
def test_kv_cache_equals_full_recompute(tiny_model, temperature, guided):
    adapter = ModelAdapter(tiny_model)
    S1 = SENTINEL0 + 1
    caption = torch.tensor([[300, S1, 301, PAD], [S1, PAD, PAD, PAD], [400, 401, S1, 402]])
    slots = build_slots(adapter, {"rgb@224": _rgb(), "caption": caption}, B)
    cond = [Condition(("rgb@224",), 2.5)] if guided else None
    kw = dict(max_new_tokens=24, temperature=temperature, conditions=cond, record_logits=True)
    with torch.no_grad():
        cached = decode_sequence(adapter, slots, "caption", torch.Generator().manual_seed(1), kv_cache=True, **kw)
        full = decode_sequence(adapter, slots, "caption", torch.Generator().manual_seed(1), kv_cache=False, **kw)
    assert torch.equal(cached.target, full.target)
    assert cached.logits.shape == full.logits.shape
    assert torch.allclose(cached.logits, full.logits, atol=1e-5, rtol=1e-5)


def test_chained_generation_feeds_each_target_to_the_next(tiny_model, monkeypatch):
    import eval_stage.generate.image_decoding as img

    seen: list[list[str]] = []
    real = img.build_slots

    def spy(adapter, state, batch_size):
        slots = real(adapter, state, batch_size)
        seen.append([n for g, n in enumerate(slots.names) if bool(slots.valid[slots.group == g].any())])
        return slots

    monkeypatch.setattr(img, "build_slots", spy)
    steps = [TargetStep("tok_depth@224", steps=2), TargetStep("tok_semseg@224", steps=2)]
    out = generate(tiny_model, {"rgb@224": _rgb()}, steps, seed=5)
    # depth steps see rgb (and, from step 2, their own decoded tokens); semseg steps also see the finished depth
    assert seen[0] == ["rgb@224"] and seen[1] == ["rgb@224", "tok_depth@224"]
    assert seen[2] == ["rgb@224", "tok_depth@224"] and seen[3] == ["rgb@224", "tok_depth@224", "tok_semseg@224"]
    # the same result step by step, with one generator carried through
    adapter, g = ModelAdapter(tiny_model), torch.Generator().manual_seed(5)
    with torch.no_grad():
        d = run_step(adapter, {"rgb@224": _rgb()}, steps[0], B, g)
        s = run_step(adapter, {"rgb@224": _rgb(), "tok_depth@224": d}, steps[1], B, g)
    assert torch.equal(out["tok_depth@224"], d) and torch.equal(out["tok_semseg@224"], s)


def test_sequence_generation_keeps_given_tokens(tiny_model):
    S1 = SENTINEL0 + 1
    caption = torch.tensor([[300, S1, 301], [302, 303, S1], [S1, 304, PAD]])
    out = generate(tiny_model, {"rgb@224": _rgb(), "caption": caption}, [TargetStep("caption", max_new_tokens=8)],
                   seed=0)["caption"]
    for b, given in enumerate(caption.tolist()):
        words = [t for t in given if t not in (PAD, S1)]
        row = [t for t in out[b].tolist() if t != PAD]
        it = iter(row)
        assert all(w in it for w in words)  # given tokens appear in order
        assert not any(SENTINEL0 <= t < SENTINEL0 + 200 for t in row)


def test_top_k_one_is_greedy_for_both_decoders(tiny_model):
    """top_k=1 (or top_p -> 0) samples the argmax whatever the seed; at τ = 1 MaskGIT's confidences are
    those of greedy decoding (softmax(logits)), so the fill order and result match too."""
    inputs = {"rgb@224": _rgb()}
    for step in (dict(modality="tok_semseg@224", steps=2, token_schedule="linear"),
                 dict(modality="caption", max_new_tokens=6)):
        greedy = generate(tiny_model, inputs, [TargetStep(**step, temperature=0.0)], seed=0)[step["modality"]]
        top1 = generate(tiny_model, inputs, [TargetStep(**step, temperature=1.0, top_k=1)], seed=9)[step["modality"]]
        nucleus = generate(tiny_model, inputs, [TargetStep(**step, top_p=1e-6)], seed=4)[step["modality"]]
        assert torch.equal(greedy, top1) and torch.equal(greedy, nucleus)
    # a temperature schedule changes nothing when top_k=1 leaves one candidate per position (sequences)
    step = dict(modality="caption", max_new_tokens=6)
    sched = generate(tiny_model, inputs, [TargetStep(**step, temperature=2.0, temperature_end=0.1,
                                                     temperature_schedule="cosine", top_k=1)], seed=4)["caption"]
    assert torch.equal(sched, generate(tiny_model, inputs, [TargetStep(**step, temperature=0.0)], seed=0)["caption"])


def test_decoding_stops_at_the_closing_sentinel_not_at_eos(tiny_model, monkeypatch):
    """[EOS] is an ordinary token of the sequence; a row ends when it writes [S_{n+1}], n = its input's spans."""
    from eval_stage.generate.inputs import EOS

    S1, S2, S3 = SENTINEL0 + 1, SENTINEL0 + 2, SENTINEL0 + 3
    script = torch.tensor([[300, EOS, 301, S2, 302, 303, 304],  # one span: stops at [S_2] after [EOS]
                           [310, S2, 311, EOS, S3, 312, 313],  # two spans: [S_2] opens the second one
                           [320, EOS, 321, 322, 323, 324, 325]])  # never closes: runs to max_new_tokens
    adapter = ModelAdapter(tiny_model)
    calls = iter(range(100))

    def scripted(modality, hidden):  # (B, D) newest slot -> logits whose argmax is script[:, t] at call t
        return torch.nn.functional.one_hot(script[:, next(calls)], 30000).float() * 10

    monkeypatch.setattr(adapter, "to_logits", scripted)
    caption = torch.tensor([[S1, PAD, PAD], [300, S1, S2], [S1, PAD, PAD]])
    slots = build_slots(adapter, {"rgb@224": _rgb(), "caption": caption}, B)
    end = torch.tensor([S2, S3, S2])
    res = decode_sequence(adapter, slots, "caption", torch.Generator().manual_seed(0), max_new_tokens=6,
                          temperature=0.0, kv_cache=False, end=end)
    assert res.target.tolist() == [[S1, 300, EOS, 301, S2, PAD, PAD],
                                   [S1, 310, S2, 311, EOS, S3, PAD],
                                   [S1, 320, EOS, 321, 322, 323, 324]]
