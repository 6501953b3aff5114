"""Fine-tuning: the ``finetune_demo`` preset starts from a committed checkpoint (its architecture and
weights, strict), trains RGB -> depth with transfer masking, beats the checkpoint it started from on that
task, records the checkpoint in its lineage, and resumes bit for bit on CPU."""

from __future__ import annotations

import pytest
import torch

from fourm_core import ArtifactStore
from train_stage.config import load_train_config
from train_stage.data import DatasetSpec, TokenShardStream
from train_stage.pretrain import demo_config, run_pretrain
from train_stage.synthetic import make_token_shards
from train_stage.trainer import build_masker, build_model

MODS = ["caption", "tok_rgb@224", "tok_depth@224", "tok_semseg@224"]
FT = {"datasets": [{"name": "synth", "weight": 1.0, "modalities": ["tok_rgb@224", "tok_depth@224"]}],
      "steps": 12, "checkpoint_every": 6, "batch_size": 4, "warmup_tokens": 0, "log_every": 4, "blr": 0.3}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    store = ArtifactStore(str(tmp_path_factory.mktemp("ft") / "store"))
    make_token_shards(store, "synth", MODS, n_shards=2, shard_size=12)
    cfg = demo_config(overrides={"datasets": [{"name": "synth", "weight": 1.0}], "steps": 8, "checkpoint_every": 0,
                                 "model.modalities": MODS, "model.overrides": {"dim": 32, "num_heads": 2},
                                 "log_every": 4})
    return store, run_pretrain(store, cfg).manifest


def _task_loss(store, cfg, model) -> float:
    """Mean RGB -> depth loss of ``model`` over 4 fixed batches masked like the fine-tuning."""
    masker = build_masker(cfg, list(dict.fromkeys(model.config.domains_in + model.config.domains_out)))
    stream = TokenShardStream(store.root_uri, [DatasetSpec("synth", 1.0, ("tok_rgb@224", "tok_depth@224"))],
                              masker, batch_size=8, seed=123)
    model.eval()
    with torch.no_grad():
        return sum(float(model(stream.make_batch(b)).loss) for b in range(4)) / 4


@pytest.mark.slow
def test_finetune_demo_beats_the_pretrained_model_and_resumes_bit_for_bit(pretrained):
    store, base = pretrained
    cfg = load_train_config("finetune_demo", FT)
    assert cfg.init_from.run == "demo" and cfg.mixture == "rgb2depth"
    before = _task_loss(store, cfg, build_model(cfg, store))  # the checkpoint it starts from, loaded strictly
    res = run_pretrain(store, cfg)
    assert res.manifest.artifact == "checkpoints/finetune-demo/step-00000012"
    assert base.as_input() in res.manifest.ingredients.inputs  # lineage: the checkpoint it started from
    from train_stage.model.hub import model_from_bytes

    m = res.manifest
    tuned = model_from_bytes(store.read_bytes(store.data_path(m.dataset, m.artifact, None, ".config.json")),
                             store.read_bytes(store.data_path(m.dataset, m.artifact, None, ".safetensors")))
    after = _task_loss(store, cfg, tuned)
    assert after < before - 0.3, (before, after)
    # a crash after step 6: the resumed run ends with the same bytes as the uninterrupted one
    store.remove(store.manifest_path("training", m.artifact, None))
    again = run_pretrain(store, cfg)
    assert again.resumed_from == 6 and again.manifest.digest == m.digest


def test_finetune_needs_a_committed_checkpoint_and_named_modalities(pretrained):
    store, _ = pretrained
    with pytest.raises(ValueError, match="datasets\\[\\].modalities"):
        load_train_config("finetune_demo", {"datasets": [{"name": "synth"}]})
    cfg = load_train_config("finetune_demo", {**FT, "init_from": {"run": "nope"}})
    with pytest.raises(FileNotFoundError, match="import-pretrained"):
        run_pretrain(store, cfg)


@pytest.mark.slow
def test_lora_finetune_merges_into_a_plain_checkpoint_and_resumes_bit_for_bit(pretrained):
    """LoRA (peft) on the trunk: only adapters train; the committed weights are the merged plain model (strict
    load, equal outputs to base + adapters), the adapters are kept for resume, and a resume is bit-exact."""
    from safetensors.torch import load as load_bytes

    from train_stage.lora import add_lora, load_lora
    from train_stage.model import from_pretrained

    store, base = pretrained
    cfg = load_train_config("finetune_demo", {**FT, "run_name": "finetune-lora", "lora": {"rank": 4, "alpha": 8}})
    before = _task_loss(store, cfg, build_model(cfg, store))
    res = run_pretrain(store, cfg)
    m = res.manifest
    merged = from_pretrained(store.uri(store.artifact_dir(m.dataset, m.artifact)))  # plain, strict
    start = build_model(cfg, store)
    for name in ("decoder_embeddings.tok_depth@224.to_logits.weight", "encoder_embeddings.tok_rgb@224.token_emb.weight"):
        assert torch.equal(merged.state_dict()[name], start.state_dict()[name]), name  # frozen: not trained
    assert not torch.equal(merged.encoder[0].attn.qkv.weight, start.encoder[0].attn.qkv.weight)  # merged adapters
    adapted = add_lora(build_model(cfg, store), 4, 8, cfg.lora.targets)
    load_lora(adapted, load_bytes(store.read_bytes(store.data_path(m.dataset, m.artifact, None, ".lora.safetensors"))))
    batch = TokenShardStream(store.root_uri, [DatasetSpec("synth", 1.0, ("tok_rgb@224", "tok_depth@224"))],
                             build_masker(cfg, list(dict.fromkeys(merged.config.domains_in + merged.config.domains_out))),
                             batch_size=4, seed=5).make_batch(0)
    with torch.no_grad():
        torch.testing.assert_close(merged.eval()(batch).loss, adapted.eval()(batch).loss, atol=1e-5, rtol=0)
    assert _task_loss(store, cfg, merged) < before - 0.02  # LoRA moves less in 12 steps than full fine-tuning
    store.remove(store.manifest_path("training", m.artifact, None))
    again = run_pretrain(store, cfg)
    assert again.resumed_from == 6 and again.manifest.digest == m.digest


def test_finetune_flow_refuses_a_config_without_init_from():
    from pipelines.finetune import finetune

    with pytest.raises(ValueError, match="no init_from"):
        finetune.fn(config="demo")


def test_finetune_flow_refuses_a_bad_evaluation_before_training():
    from fourm_core.config import ConfigError
    from pipelines.finetune import finetune

    with pytest.raises(ConfigError, match="no-such-eval"):
        finetune.fn(config="finetune_demo", store_root="/nonexistent/store", evaluation="no-such-eval")
