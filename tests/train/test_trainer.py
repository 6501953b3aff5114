"""Trainer: bit-for-bit resume, checkpoints with lineage, schedule, weight decay, skip on NaN, FLOPs,
and the pretrain entry point (falling loss, cached)."""

from __future__ import annotations

import json

import pytest
import torch

from fourm_core import ArtifactStore
from train_stage.config import TrainConfig
from train_stage.flops import forward_flops
from train_stage.model import FourM, from_pretrained, preset
from train_stage.pretrain import pretrain
from train_stage.synthetic import make_token_shards
from train_stage.trainer import Dist, Trainer, lr_at, param_groups

MODS = ["caption", "tok_semseg@224", "tok_dinov2_global"]


def make_cfg(**kw) -> TrainConfig:
    base = dict(run_name="t", model={"size": "tiny", "modalities": MODS, "overrides": {"dim": 32, "num_heads": 2}},
                mixture="demo", input_budget=32, target_budget=32, datasets=[{"name": "synth", "weight": 1.0}],
                batch_size=4, steps=6, blr=0.05, warmup_tokens=500, grad_clip=1.0, dtype="fp32")
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture
def shard_store(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    make_token_shards(store, "synth", MODS, n_shards=2, shard_size=16)
    return store


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resume_is_bit_for_bit(shard_store, tmp_path):
    straight = Trainer(make_cfg(run_name="straight"), shard_store, dist_info=Dist())
    straight.fit(6)
    first = Trainer(make_cfg(run_name="resumed"), shard_store, dist_info=Dist())
    first.fit(3)
    del first
    second = Trainer(make_cfg(run_name="resumed"), shard_store, dist_info=Dist())
    assert second.load() == 3
    assert second.loader.state_dict()["next_batch"] == 3
    second.fit(6)
    a, b = params(straight.model), params(second.model)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the resumed trainer carries the history of the steps before the checkpoint too
    assert [r["loss"] for r in straight.history] == [r["loss"] for r in second.history]


def test_checkpoint_has_lineage_and_loads_as_pretrained(shard_store, tmp_path):
    t = Trainer(make_cfg(steps=2), shard_store, log_dir=tmp_path / "logs", dist_info=Dist())
    m = t.fit()
    assert m.artifact == "checkpoints/t/step-00000002" and m.ingredients.stage == "train"
    inputs = {(i.dataset, i.artifact, i.shard) for i in m.ingredients.inputs}
    assert ("synth", "tokens/caption", 0) in inputs and ("synth", "tokens/tok_semseg-224", 1) in inputs
    assert m.ingredients.config["run_name"] == "t" and m.ingredients.code_version
    loaded = from_pretrained(str(shard_store.path("training", m.artifact)))
    for k, v in t.model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    # logs: per-step JSON lines with per-modality losses, TensorBoard events, loss curve
    recs = [json.loads(x) for x in (tmp_path / "logs" / "log.jsonl").read_text().splitlines()]
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "mfu", "modality_loss"} <= set(recs[0])
    assert list((tmp_path / "logs" / "tb").glob("events.out.tfevents.*"))
    assert (tmp_path / "logs" / "loss.png").stat().st_size > 0


def test_lr_schedule_in_tokens():
    assert lr_at(0, 1.0, 100, 1000, 0.0) == 0.0
    assert lr_at(50, 1.0, 100, 1000, 0.0) == pytest.approx(0.5)
    assert lr_at(100, 1.0, 100, 1000, 0.0) == pytest.approx(1.0)
    assert lr_at(550, 1.0, 100, 1000, 0.1) == pytest.approx(0.1 + 0.45)
    assert lr_at(1000, 1.0, 100, 1000, 0.1) == pytest.approx(0.1)
    assert lr_at(5000, 1.0, 100, 1000, 0.1) == pytest.approx(0.1)


def test_no_weight_decay_on_norms_biases_embeddings():
    model = FourM(preset("tiny", MODS, dim=32, num_heads=2))
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    d = {names[id(p)] for p in decay["params"]}
    assert "encoder.0.norm1.weight" in nd and "decoder_proj_context.bias" in nd and "mask_token" in nd
    assert "encoder_embeddings.caption.token_emb.weight" in nd and "decoder_embeddings.caption.mod_emb" in nd
    assert "encoder.0.attn.qkv.weight" in d and "decoder_embeddings.caption.to_logits.weight" in d


def test_non_finite_loss_is_skipped(shard_store):
    t = Trainer(make_cfg(), shard_store, dist_info=Dist())
    before = params(t.model)
    real = t.wrapped

    def nan_forward(batch):
        out = real(batch)
        out.loss = out.loss * float("nan")
        return out

    t.wrapped = nan_forward
    rec = t.train_step()
    assert rec["skipped"] and t.skipped == 1
    for k, v in params(t.model).items():
        assert torch.equal(v, before[k]), k
    t.wrapped = real
    assert not t.train_step()["skipped"]


def test_flop_count_matches_hand_count():
    cfg = preset("tiny", ["caption", "tok_depth@224"], dim=8, num_heads=2, encoder_depth=1, decoder_depth=1)
    # D = 8, SwiGLU hidden int(2*4*8/3) = 21; 3 encoder and 2 decoder tokens
    D, H, n, m = 8, 21, 3, 2
    enc = n * (3 * D * D) + n * (D * D) + 2 * n * n * D + n * 3 * D * H
    dec = m * 3 * D * D + m * D * D + m * D * D + n * 2 * D * D + m * D * D + 2 * m * m * D + 2 * m * n * D \
        + m * 3 * D * H
    ctx = n * D * D
    assert forward_flops(cfg, n, m) == 2 * (enc + dec + ctx)
    assert forward_flops(cfg, n, m, head_vocab_tokens=2 * 100) == 2 * (enc + dec + ctx + 200 * D)


def test_pretrain_demo_loss_falls_and_is_cached(shard_store, tmp_path):
    cfg = make_cfg(run_name="demo-test", steps=30, blr=0.3, warmup_tokens=1000)
    m = pretrain(shard_store, cfg, log_dir=tmp_path / "logs")
    hist = json.loads(shard_store.read_bytes(shard_store.data_path("training", m.artifact, None, ".history.json")))
    first = sum(r["loss"] for r in hist[:3]) / 3
    last = sum(r["loss"] for r in hist[-3:]) / 3
    assert first > 7.0 and last < first - 1.5, (first, last)
    again = pretrain(shard_store, cfg)
    assert again.digest == m.digest and again.timings == m.timings  # cached: nothing retrained


def test_lr_follows_nominal_tokens_when_samples_use_less_than_the_budget(shard_store):
    """Steps are sized from the token budget, so the schedule counts step x budget: a batch that leaves part of the
    budget unused (a target budget larger than these samples hold) must still end the cosine at min_lr."""
    t = Trainer(make_cfg(steps=4, target_budget=400, warmup_tokens=0, min_lr=1e-5), shard_store, dist_info=Dist())
    t.fit()
    per_step = (32 + 400) * 4
    assert t.tokens < per_step * 4  # the samples really used less than the budget
    expected = [lr_at(i * per_step, t.peak_lr, 0, per_step * 4, 1e-5) for i in range(4)]
    assert [r["lr"] for r in t.history] == pytest.approx(expected)
