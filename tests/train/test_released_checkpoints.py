"""Released 4M checkpoints load strictly, with no adapter, through the one loading path.

Reference data (tests/fixtures/ml4m/fm, from apple/ml-4m, see its README): the tensor names, shapes and
kinds plus config.json (indented and compact) of the released 4M-21 B/L/XL and 4M-7 B models, and a tiny
reference-format checkpoint with a masked batch and its activations, logits and loss.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from train_stage.model import FourM, FourMConfig, from_pretrained, preset, save_pretrained
from train_stage.model.hub import load_state, tied_layout

from .ml4m_batch import reference_batch_to_ours

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ml4m" / "fm"
RELEASED = ["4M-21_B", "4M-21_L", "4M-21_XL", "4M-7_B"]


def _released(name: str) -> dict:
    return json.loads((FIXTURES / "keys" / f"{name}.keys.json").read_text())


@pytest.mark.parametrize("name", RELEASED)
@pytest.mark.parametrize("form", ["config.json", "config.compact.json"])
def test_released_key_list_loads_strictly(name, form):
    """config.json read as is builds a model whose state dict is the released one: every key, shape and
    kind (parameter / buffer), tied modality embeddings stored once with the reference's metadata."""
    ref = _released(name)
    cfg = FourMConfig.from_json((FIXTURES / "keys" / f"{name}.{form}").read_text())
    with torch.device("meta"):
        model = FourM(cfg)
    dropped, metadata = tied_layout(model.state_dict(), model.tied_parameter_names())
    stored = {k: v for k, v in model.state_dict().items() if k not in dropped}
    assert {k: list(v.shape) for k, v in stored.items()} == {k: v["shape"] for k, v in ref["tensors"].items()}
    assert metadata == ref["safetensors_metadata"]
    params = {n for n, _ in model.named_parameters()}  # tied parameters once, under their first name
    kinds = {k: "parameter" if k in params or k in metadata.values() else "buffer" for k in stored}
    assert kinds == {k: v["kind"] for k, v in ref["tensors"].items()}
    assert sum(v.numel() for k, v in stored.items() if kinds[k] == "parameter") == ref["n_parameters_stored"]
    # a state dict made from the list alone (meta tensors) loads with strict=True
    state = {k: torch.empty(v["shape"], device="meta") for k, v in ref["tensors"].items()}
    load_state(model, state, ref["safetensors_metadata"])


def test_preset_sizes_equal_the_released_configs():
    """Our B/L/XL presets are the released architectures (same tensors as the released key lists)."""
    for name, size, mods in [("4M-21_B", "B", "4m21"), ("4M-21_L", "L", "4m21"), ("4M-21_XL", "XL", "4m21"),
                             ("4M-7_B", "B", "4m7")]:
        with torch.device("meta"):
            model = FourM(preset(size, mods))
        dropped, _ = tied_layout(model.state_dict(), model.tied_parameter_names())
        stored = {k: v for k, v in model.state_dict().items() if k not in dropped}
        ref = _released(name)["tensors"]
        assert {k: list(v.shape) for k, v in stored.items()} == {k: v["shape"] for k, v in ref.items()}, name


@pytest.mark.parametrize("name", ["4M-21_B", "4M-21_L", "4M-21_XL"])
def test_config_json_is_written_byte_for_byte(name):
    for form in ("config.json", "config.compact.json"):
        cfg = FourMConfig.from_json((FIXTURES / "keys" / f"{name}.{form}").read_text())
        assert cfg.to_json() == (FIXTURES / "keys" / f"{name}.config.json").read_text()


def test_bad_config_json_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        FourMConfig.from_json_file(tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        from_pretrained(tmp_path)


def _fixture_batch():
    info = json.loads((FIXTURES / "tiny" / "fixture_info.json").read_text())
    f = info["forward"]
    batch = load_file(str(FIXTURES / "tiny" / "batch.safetensors"))
    ours = reference_batch_to_ours(batch, info["masking"]["modality_order"], f["decoder_modality_order"],
                                   f["num_encoder_tokens"], f["num_decoder_tokens"])
    return ours, load_file(str(FIXTURES / "tiny" / "forward_outputs.safetensors"))


def test_tiny_reference_checkpoint_matches_reference_forward():
    """The reference's tiny checkpoint loads with strict=True as is and reproduces its activations (<= 1e-5),
    logits (<= 1e-5), argmax and loss (1e-5 relative) on the reference's masked batch."""
    model = from_pretrained(FIXTURES / "tiny").eval()
    batch, ref = _fixture_batch()
    ev, dv = batch.enc_valid, batch.dec_valid
    assert torch.equal(ev, ~ref["encoder_mask"]) and torch.equal(dv, ~ref["decoder_mask"][:, 0])
    with torch.no_grad():
        encoded, emb = model.encode(batch)
        context = model.decoder_proj_context(encoded) + emb
        y = model.decode(batch, encoded, emb)
        out = model(batch)
        logits = model.logits(batch)
        attn = model.decoder_mask(batch.dec_modality, batch.dec_valid)[:, 0]
    for ours, key, valid in [(emb, "encoder_emb", ev), (encoded, "encoder_output", ev),
                             (context, "decoder_context", ev), (y, "decoder_output", dv)]:
        torch.testing.assert_close(ours[valid], ref[key][valid], atol=1e-5, rtol=0, msg=key)
    pairs = dv[:, :, None] & dv[:, None, :]
    assert torch.equal(attn[pairs], ~ref["decoder_attention_mask"][pairs])  # same self-attention pattern
    cols = ref["logit_columns"]
    for name, (sel, lg) in logits.items():
        assert torch.equal(sel, ref[f"logits.{name}.positions_mask"]), name
        torch.testing.assert_close(lg[:, cols], ref[f"logits.{name}.cols"], atol=1e-5, rtol=0)
        torch.testing.assert_close(lg.logsumexp(-1), ref[f"logits.{name}.logsumexp"], atol=1e-5, rtol=0)
        assert torch.equal(lg.argmax(-1), ref[f"logits.{name}.argmax"]), name
    torch.testing.assert_close(out.loss, ref["loss"][0], rtol=1e-5, atol=0)
    for i, name in enumerate(model.config.domains_out):
        torch.testing.assert_close(out.modality_losses[i], ref[f"loss.{name}"][0], rtol=1e-5, atol=0)


def test_round_trip_to_the_reference_format(tmp_path):
    """reference files -> load -> save_pretrained: the same tensors (bit for bit), metadata and config keys,
    and what we wrote loads again strictly."""
    model = from_pretrained(FIXTURES / "tiny")
    save_pretrained(model, tmp_path / "ours")
    ref = load_file(str(FIXTURES / "tiny" / "model.safetensors"))
    ours = load_file(str(tmp_path / "ours" / "model.safetensors"))
    assert ours.keys() == ref.keys()
    for k in ref:
        assert torch.equal(ours[k], ref[k]), k
    assert json.loads((tmp_path / "ours" / "config.json").read_text()) == \
        json.loads((FIXTURES / "tiny" / "config.json").read_text())
    again = from_pretrained(tmp_path / "ours")
    for k, v in again.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_shared_modality_embeddings_are_stored_once_with_aliases(tmp_path, tiny_config):
    """4M-7 style: the tied embedding is stored under its sorted-first name with a metadata alias, the
    way safetensors' save_model (the reference's writer) stores it; a file with the alias loads strictly."""
    cfg = FourMConfig(**tiny_config.model_copy(update={"share_modality_embeddings": True}).model_dump())
    torch.manual_seed(0)
    model = FourM(cfg)
    save_pretrained(model, tmp_path / "m")
    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as f:
        keys, metadata = set(f.keys()), f.metadata()
    assert "decoder_embeddings.caption.mod_emb" in keys and "encoder_embeddings.caption.mod_emb" not in keys
    assert metadata["encoder_embeddings.caption.mod_emb"] == "decoder_embeddings.caption.mod_emb"
    loaded = from_pretrained(tmp_path / "m")
    assert loaded.encoder_embeddings["caption"].mod_emb is loaded.decoder_embeddings["caption"].mod_emb
    assert torch.equal(loaded.encoder_embeddings["caption"].mod_emb, model.encoder_embeddings["caption"].mod_emb)
    # the reference's own loader (safetensors load_model, strict) accepts our file
    from safetensors.torch import load_model

    missing, unexpected = load_model(FourM(cfg), str(tmp_path / "m" / "model.safetensors"), strict=True)
    assert not missing and not unexpected
    # a file missing a tensor that no alias covers is refused
    state = load_file(str(tmp_path / "m" / "model.safetensors"))
    state.pop("mask_token")
    save_file(state, str(tmp_path / "m" / "model.safetensors"), metadata=metadata)
    with pytest.raises(RuntimeError, match="mask_token"):
        from_pretrained(tmp_path / "m")


def test_global_token_position_tables_are_learned(tiny_config):
    model = FourM(tiny_config)
    params = dict(model.named_parameters())
    assert "encoder_embeddings.tok_dinov2_global.pos_emb" in params
    assert "decoder_embeddings.tok_dinov2_global.pos_emb" in params
    assert "encoder_embeddings.tok_depth@224.pos_emb" not in params  # fixed sin-cos buffer
    assert model.encoder_embeddings["caption"].pos_emb.shape[1] == 512


def test_hub_id_resolves_through_the_hub_cache(tmp_path, monkeypatch):
    """A hub id (``EPFL-VILAB/4M-21_B`` style) goes through huggingface_hub's snapshot_download; offline,
    a populated hub cache serves it (the layout huggingface_hub writes after a download)."""
    import shutil

    snap = tmp_path / "hub" / "models--EPFL-VILAB--4M-tiny-fixture" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(FIXTURES / "tiny" / name, snap / name)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    model = from_pretrained("EPFL-VILAB/4M-tiny-fixture")
    assert torch.equal(model.mask_token, load_file(str(FIXTURES / "tiny" / "model.safetensors"))["mask_token"])
    with pytest.raises(FileNotFoundError, match="not a directory"):
        from_pretrained(str(tmp_path / "missing" / "dir"))


def test_released_checkpoint_imports_into_the_store_and_evaluation_loads_it(tmp_path):
    """``python -m train_stage import-pretrained`` commits the files unchanged as a store checkpoint that the
    evaluation stage finds and loads; a second import is cached; a file that does not load is refused."""
    from eval_stage.config import CheckpointSpec
    from eval_stage.checkpoints import find_checkpoint, load_checkpoint
    from fourm_core import ArtifactStore
    from train_stage.__main__ import main

    main(["import-pretrained", str(FIXTURES / "tiny"), "--run", "ref-tiny", "--store", str(tmp_path / "store")])
    store = ArtifactStore(str(tmp_path / "store"))
    cfg = type("Cfg", (), {"checkpoint": CheckpointSpec(run="ref-tiny")})()
    m = find_checkpoint(store, cfg)
    assert m.artifact == "checkpoints/ref-tiny/step-00000000"
    assert store.read_bytes(store.data_path(m.dataset, m.artifact, None, ".safetensors")) == \
        (FIXTURES / "tiny" / "model.safetensors").read_bytes()
    model = load_checkpoint(store, m)
    assert torch.equal(model.mask_token, from_pretrained(FIXTURES / "tiny").mask_token)
    from train_stage.released import import_pretrained

    assert import_pretrained(store, str(FIXTURES / "tiny"), "ref-tiny").timings == m.timings  # cached
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((FIXTURES / "tiny" / "config.json").read_text())
    state = load_file(str(FIXTURES / "tiny" / "model.safetensors"))
    state.pop("mask_token")
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(RuntimeError, match="mask_token"):
        import_pretrained(store, str(bad), "bad")
    assert store.read_manifest("training", "checkpoints/bad/step-00000000", None) is None
