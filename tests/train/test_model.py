"""The 4M model: §9 names, strict round trip through the real loading path, masks, shapes, loss."""

from __future__ import annotations

import json

import pytest
import torch

from train_stage.batch import MODALITY_INDEX
from train_stage.masking import Masker
from train_stage.mixture import MixtureConfig, load_mixture
from train_stage.model import FourM, FourMConfig, from_pretrained, preset, save_pretrained
from train_stage.synthetic_batch import random_raw_batch

from .conftest import TINY_MODALITIES


def masked_batch(modalities, B=4, seed=0, budget=48, t5_dim=4096):
    mix = load_mixture("4m21").model_copy(update={"modalities": modalities, "input_budget": budget,
                                                  "target_budget": budget})
    raw = random_raw_batch(modalities, B, torch.Generator().manual_seed(seed), t5_dim=t5_dim)
    return Masker(mix)(raw, torch.Generator().manual_seed(seed + 1))


def test_section9_names_for_one_modality_of_each_kind():
    """The state-dict keys equal a hand-written list made from 4M-FACTS §9."""
    cfg = preset("tiny", ["rgb@224", "caption", "t5_caption", "tok_depth@224"], encoder_depth=1, decoder_depth=1,
                 dim=32, num_heads=2, share_modality_embeddings=False)
    expected = set()
    for m in ["caption", "tok_depth@224"]:
        expected |= {f"encoder_embeddings.{m}.{k}" for k in ["token_emb.weight", "pos_emb", "mod_emb"]}
        expected |= {f"decoder_embeddings.{m}.{k}" for k in ["token_emb.weight", "to_logits.weight", "pos_emb",
                                                              "mod_emb"]}
    expected |= {f"encoder_embeddings.rgb@224.{k}" for k in ["proj.weight", "pos_emb", "mod_emb"]}
    expected |= {f"encoder_embeddings.t5_caption.{k}" for k in ["emb_proj.weight", "emb_proj.bias", "pos_emb",
                                                                 "mod_emb"]}
    expected |= {f"encoder.0.{k}.weight" for k in ["norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2",
                                                   "mlp.fc3"]}
    # norms without bias store an all-zero bias buffer, as the released checkpoints do
    norms = ["encoder.0.norm1", "encoder.0.norm2", "encoder_norm", "decoder_norm"] + \
        [f"decoder.0.{k}" for k in ["norm1", "query_norm", "context_norm", "norm2"]]
    expected |= {f"{n}.bias" for n in norms}
    expected |= {f"decoder.0.{k}.weight" for k in ["norm1", "self_attn.qkv", "self_attn.proj", "cross_attn.q",
                                                   "cross_attn.kv", "cross_attn.proj", "query_norm", "context_norm",
                                                   "norm2", "mlp.fc1", "mlp.fc2", "mlp.fc3"]}
    expected |= {"encoder_norm.weight", "decoder_norm.weight", "decoder_proj_context.weight",
                 "decoder_proj_context.bias", "mask_token"}
    model = FourM(cfg)
    assert set(model.state_dict()) == expected
    # a state dict built from the list alone (shapes from the config) loads strictly
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    synthetic = {k: torch.randn(shapes[k]) for k in sorted(expected)}
    FourM(cfg).load_state_dict(synthetic, strict=True)
    assert model.encoder[0].mlp.fc1.weight.shape == (int(2 * 4 * 32 / 3), 32)


def test_b_preset_matches_paper_parameter_counts():
    with torch.device("meta"):
        model = FourM(preset("B", "4m21"))
    trunk = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("encoder.", "decoder.")))
    total = sum(p.numel() for p in model.parameters())
    assert round(trunk / 1e6) == 198  # §6: 198 M in the trunk
    assert round(total / 1e6) == 834  # §9: 4M-21 B ≈ 834 M with embeddings and heads
    assert model.encoder[0].mlp.fc1.out_features == 2048


@pytest.mark.parametrize("shared", [False, True])
def test_save_and_load_pretrained_round_trip(tmp_path, tiny_config, shared):
    cfg = tiny_config.model_copy(update={"share_modality_embeddings": shared})
    cfg = FourMConfig(**cfg.model_dump())
    torch.manual_seed(0)
    model = FourM(cfg).eval()
    save_pretrained(model, tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["domains_in"] == cfg.domains_in
    loaded = from_pretrained(str(tmp_path / "ckpt")).eval()  # the real loading path, strict=True inside
    batch = masked_batch(TINY_MODALITIES)
    with torch.no_grad():
        a, b = model(batch), loaded(batch)
    assert torch.equal(a.loss, b.loss)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    if shared:
        assert loaded.decoder_embeddings["caption"].mod_emb is loaded.encoder_embeddings["caption"].mod_emb


def test_strict_load_rejects_missing_and_unexpected_keys(tiny_config):
    model = FourM(tiny_config)
    state = model.state_dict()
    state.pop("mask_token")
    with pytest.raises(RuntimeError):
        FourM(tiny_config).load_state_dict(state, strict=True)


def test_released_config_keys_validate(tmp_path):
    """A config.json in the released vocabulary (with an extra unknown key) builds the model."""
    cfg = {"domains_in": ["rgb@224", "caption", "tok_rgb@224"], "domains_out": ["caption", "tok_rgb@224"],
           "encoder_depth": 1, "decoder_depth": 1, "dim": 32, "num_heads": 2, "mlp_ratio": 4.0, "qkv_bias": False,
           "proj_bias": False, "mlp_bias": False, "norm_bias": False, "act_layer": "SiLU", "gated_mlp": True,
           "image_size": 224, "patch_size": 16, "some_future_key": 1}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    c = FourMConfig.from_json_file(tmp_path / "config.json")
    assert c.share_modality_embeddings is True  # absent means true (4M-7)
    FourM(c)


def test_forward_every_kind_and_loss_is_mean_of_modality_losses(tiny_config):
    torch.manual_seed(0)
    model = FourM(tiny_config)
    batch = masked_batch(TINY_MODALITIES, B=6)
    out = model(batch)
    present = out.modality_counts > 0
    assert torch.isfinite(out.loss)
    assert torch.allclose(out.loss, out.modality_losses[present].mean())
    out.loss.backward()
    # every kind of encoder embedding gets gradient when its modality is in the input
    used = {n for n in TINY_MODALITIES if (batch.enc_modality == MODALITY_INDEX[n]).any()}
    for n in used:
        emb = model.encoder_embeddings[n]
        params = [p for name, p in emb.named_parameters() if name != "mod_emb"]
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params), n
    logits = model.logits(batch)
    sel, lg = logits["tok_depth@224"]
    assert lg.shape == (int(sel.sum()), 8192)


def test_decoder_mask_patterns(tiny_config):
    model = FourM(tiny_config)
    cap, dep, pad = MODALITY_INDEX["caption"], MODALITY_INDEX["tok_depth@224"], -1
    mods = torch.tensor([[dep, dep, cap, cap, cap, pad]])
    valid = mods >= 0
    m = model.decoder_mask(mods, valid)[0, 0]
    # image targets: bidirectional within the modality, nothing across modalities
    assert m[0, 1] and m[1, 0] and not m[0, 2] and not m[2, 0]
    # sequence targets: causal within the modality
    assert m[3, 2] and not m[2, 3] and m[4, 2] and m[4, 3] and not m[3, 4]
    # padding: never attended to, attends only to itself
    assert not m[:5, 5].any() and m[5, 5]
    enc = model.encoder_mask(torch.tensor([[True, True, False]]))[0, 0]
    assert enc[0, 1] and not enc[0, 2] and enc[2, 2]


def test_decoder_mask_matches_attention_effect(tiny_config):
    """Changing a later caption token must not change earlier caption predictions (causal), and
    changing a caption token must not change depth predictions (per-modality)."""
    torch.manual_seed(0)
    model = FourM(tiny_config).eval()
    batch = masked_batch(TINY_MODALITIES, B=8)
    cap = MODALITY_INDEX["caption"]
    is_cap = batch.dec_modality == cap
    b = int(is_cap.sum(1).argmax())
    idx = is_cap[b].nonzero()[:, 0]
    assert len(idx) >= 3
    y0 = model.decode(batch, *model.encode(batch))
    batch.dec_tokens[b, idx[-1]] = (batch.dec_tokens[b, idx[-1]] + 1) % 30000
    y1 = model.decode(batch, *model.encode(batch))
    assert torch.allclose(y0[b, idx[:-1]], y1[b, idx[:-1]], atol=1e-6)
    assert not torch.allclose(y0[b, idx[-1]], y1[b, idx[-1]])
    other = batch.dec_valid[b] & ~is_cap[b]
    assert torch.allclose(y0[b, other], y1[b, other], atol=1e-6)


def test_tiny_model_overfits_a_few_samples():
    """Loss falls below a fixed bound when a tiny model fits 4 fixed masked samples."""
    mods = ["tok_semseg@224", "tok_dinov2_global"]
    cfg = preset("tiny", mods, dim=48, num_heads=4)
    torch.manual_seed(0)
    model = FourM(cfg)
    mix = MixtureConfig(name="t", input_budget=32, target_budget=32, modalities=mods,
                        components=[{"name": "a", "weight": 1, "input_alpha": {"default": 1.0},
                                     "target_alpha": {"default": 1.0}}])
    g = torch.Generator().manual_seed(0)
    raw = random_raw_batch(mods, 4, g)
    # each sample has its own pattern (a shifted ramp) and a global token that names the sample
    sample = torch.arange(4)[:, None]
    raw.tokens["tok_semseg@224"] = (torch.arange(196)[None] + 3 * sample) % 8
    raw.tokens["tok_dinov2_global"] = (sample + torch.arange(16)[None] * 0) % 8
    batch = Masker(mix)(raw, g)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = model(batch).loss
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    # chance level of the 8-token effective vocabulary is ln 8 = 2.08
    assert first > 6.0 and loss.item() < 1.25, (first, loss.item())
