"""Generation against the reference implementation's outputs on its tiny checkpoint (tests/fixtures/ml4m/fm/tiny):
greedy caption decoding from "[S_1]" that stops at the closing sentinel, and MaskGIT tok_depth decoding.

At temperature 0 every MaskGIT confidence of the reference is 1.0, so which positions it commits at a step is
the tie order of its ``torch.topk``; the fixture records them and the test replays them, checking our logits'
argmax at every still-masked position of every step and the final tokens.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from eval_stage.generate import ModelAdapter, TargetStep, build_slots, decode_sequence, generate
from eval_stage.generate.inputs import SENTINEL0, UNKNOWN
from train_stage.model import from_pretrained

TINY = Path(__file__).parents[1] / "fixtures/ml4m/fm/tiny"


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return from_pretrained(TINY).eval(), load_file(str(TINY / "batch.safetensors"))["rgb@224.tensor"], \
        load_file(str(TINY / "generation_outputs.safetensors"))


def test_caption_greedy_decoding_equals_the_reference(reference):
    model, rgb, out = reference
    expected = out["caption.tensor"]  # (2, 31): the reference wrote 31 tokens and never its closing [S_2]
    adapter = ModelAdapter(model)
    slots = build_slots(adapter, {"rgb@224": rgb, "caption": torch.full((2, 1), SENTINEL0 + 1)}, 2)
    res = decode_sequence(adapter, slots, "caption", torch.Generator().manual_seed(0),
                          max_new_tokens=expected.shape[1], temperature=0.0)
    assert res.target[:, 0].tolist() == [SENTINEL0 + 1] * 2  # decoding starts from [S_1]
    assert torch.equal(res.target[:, 1:], expected)
    # the whole path: no [EOS] and no closing sentinel written, so the completed caption is those tokens
    step = TargetStep("caption", temperature=0.0, max_new_tokens=expected.shape[1])
    assert torch.equal(generate(model, {"rgb@224": rgb}, [step])["caption"], expected)


def test_maskgit_depth_steps_equal_the_reference(reference):
    model, rgb, out = reference
    adapter = ModelAdapter(model)
    L = 196
    cur = torch.full((2, L), UNKNOWN, dtype=torch.long)
    step = 0
    while f"maskgit.step{step}.argmax_all" in out:
        pos = out[f"maskgit.step{step}.mod_pos"]  # (2, n) the still-masked positions, in the reference's order
        assert torch.equal((cur == UNKNOWN).sum(1), torch.full((2,), pos.shape[1]))
        with torch.no_grad():
            ctx = adapter.encode(build_slots(adapter, {"rgb@224": rgb, "tok_depth@224": cur}, 2))
            logits = adapter.decode(ctx, "tok_depth@224", torch.zeros_like(pos), pos, torch.ones_like(pos, dtype=torch.bool))
        argmax = logits.float().argmax(-1)
        assert torch.equal(argmax, out[f"maskgit.step{step}.argmax_all"]), step
        chosen = out[f"maskgit.step{step}.selected_positions"]
        picked = argmax.gather(1, (pos[:, :, None] == chosen[:, None, :]).long().argmax(1))
        cur = cur.scatter(1, chosen, picked)
        step += 1
    assert step == 8
    assert torch.equal(cur, out["tok_depth.tensor"])
