"""apple/ml-4m's released tokenizers load strictly into our modules (ml4m layout) and reproduce the
reference: tiny random-weight instances saved by the reference code (tests/fixtures/ml4m/tokenizers/tiny,
with its inputs, token ids and decodes) and the released-size key tables (released/*.keys.json)."""

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tokenize_stage.models import Tokenizer, build_tokenizer, from_pretrained
from tokenize_stage.models.ml4m import (Ml4mFormatError, config_from_ml4m, save_ml4m, state_dict_from_ml4m,
                                        state_dict_to_ml4m)
from tokenize_stage.registry import tokenizer_config
from tokenize_stage.synthetic import synthetic_batch

FIXTURES = Path(__file__).parents[1] / "fixtures" / "ml4m" / "tokenizers"
TINY = {"semseg": "semseg_vqvae", "clip_feature": "clip_vqvae", "dinov2_feature": "dinov2_vqvae",
        "sam_mask": "mask_vq", "dinov2_global": "dinov2_global_memcodes",
        "imagebind_global": "imagebind_global_memcodes", "human_poses": "pose_vq"}
HUB_TO_OURS = {f"EPFL-VILAB/4M_tokenizers_{k}": v for k, v in {
    "rgb_16k_224-448": "rgb_diffusion", "depth_8k_224-448": "depth_diffusion", "normal_8k_224-448": "normal_diffusion",
    "edge_8k_224-512": "edge_diffusion", "semseg_4k_224-448": "semseg_vqvae", "CLIP-B16_8k_224-448": "clip_vqvae",
    "DINOv2-B14_8k_224-448": "dinov2_vqvae", "ImageBind-H14_8k_224-448": "imagebind_vqvae",
    "sam-instance_1k_64": "mask_vq", "human-poses_1k_8": "pose_vq",
    "DINOv2-B14-global_8k_16_224": "dinov2_global_memcodes",
    "ImageBind-H14-global_8k_16_224": "imagebind_global_memcodes"}.items()}
RELEASED = sorted(FIXTURES.glob("released/*.keys.json"))


def _run(tok: Tokenizer, vectors: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Our tokens (B, N) for the fixture's input and our decode of the fixture's tokens, shaped as theirs."""
    x, ref_tokens = vectors["input"], vectors["tokens"].flatten(1)
    with torch.no_grad():
        if tok.config.architecture == "mlp_memcodes":  # reference vectors are (B, C, 1, 1)
            return tok.encode(x.flatten(1)), tok.decode(ref_tokens).view_as(vectors["decoded_from_tokens"])
        return tok.encode(x), tok.decode_raw(ref_tokens)


@pytest.mark.parametrize("fixture", sorted(TINY))
def test_tiny_reference_tokenizer_reproduces_tokens_and_decodes(fixture):
    folder = FIXTURES / "tiny" / fixture
    tok = from_pretrained(folder)  # the one loading path; the name is guessed from the folder
    assert tok.config.name == TINY[fixture] and tok.config.layout == "ml4m"
    vectors = load_file(str(folder / "vectors.safetensors"))
    tokens, decoded = _run(tok, vectors)
    assert torch.equal(tokens, vectors["tokens"].flatten(1))
    torch.testing.assert_close(decoded, vectors["decoded_from_tokens"], atol=1e-4, rtol=0)
    if tok.config.architecture == "vqvae":  # the latent before the quantizer (quant_proj output) too
        with torch.no_grad():
            h = tok.quantizer.project_in(tok.encoder(tok._prepare(vectors["input"])))
        ref = vectors["pre_quant_latent"]
        torch.testing.assert_close(h.transpose(1, 2).reshape(ref.shape), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("keys", RELEASED, ids=lambda p: p.name.split(".")[0])
def test_released_key_table_loads_strictly(keys):
    """Every released tensor maps to one of ours with the same shape and ours are all supplied
    (strict load on the meta device); parameter counts equal the reference's."""
    table = json.loads(keys.read_text())
    shapes = {k: tuple(v["shape"]) for k, v in table["tensors"].items()}
    config = config_from_ml4m(table["constructor_kwargs"], shapes, hint=table["hub_id"])
    with torch.device("meta"):
        model = build_tokenizer(config)
    released = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    model.load_state_dict(state_dict_from_ml4m(released, config), strict=True, assign=True)
    assert sum(p.numel() for p in model.parameters()) == table["n_params"]
    exported = state_dict_to_ml4m(model.state_dict(), config)  # and back: the same names and shapes
    assert {k: tuple(v.shape) for k, v in exported.items()} == shapes
    assert config.name == HUB_TO_OURS[table["hub_id"]]


def test_older_pth_layout_and_hints(tmp_path):
    """``<id>.pth`` with ckpt['model'] + ckpt['args'] (loaded with weights_only=True) gives the same tokenizer."""
    src = FIXTURES / "tiny" / "semseg"
    cfg = json.loads((src / "config.json").read_text())
    args = argparse.Namespace(domain="semseg_coco", encoder_type=cfg["enc_type"], decoder_type=cfg["dec_type"],
                              quantizer_type=cfg["quant_type"], input_size_max=cfg["image_size"],
                              **{k: cfg[k] for k in ("codebook_size", "latent_dim", "patch_size", "post_mlp",
                                                     "patch_proj", "norm_codes", "out_conv")})
    (tmp_path / "old").mkdir()
    torch.save({"model": load_file(str(src / "model.safetensors")), "args": args},
               tmp_path / "old" / "semseg_4k_224-448.pth")
    tok = from_pretrained(tmp_path / "old")
    vectors = load_file(str(src / "vectors.safetensors"))
    assert torch.equal(_run(tok, vectors)[0], vectors["tokens"].flatten(1))


def test_unplaceable_tensor_is_refused(tmp_path):
    folder = tmp_path / "dinov2_global"
    shutil.copytree(FIXTURES / "tiny" / "dinov2_global", folder)
    weights = load_file(str(folder / "model.safetensors"))
    weights["quantize.extra"] = torch.zeros(1)
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(Ml4mFormatError, match="quantize.extra"):
        from_pretrained(folder)


@pytest.mark.parametrize("name", ["semseg_vqvae", "mask_vq", "pose_vq", "dinov2_global_memcodes", "rgb_diffusion"])
def test_our_training_builds_and_reloads_the_ml4m_layout(tmp_path, name):
    """Our trainer's step works on the reference architecture; a checkpoint of ours reloads identically."""
    torch.manual_seed(0)
    model = build_tokenizer(tokenizer_config(name, "tiny", layout="ml4m"))
    x = synthetic_batch(model.config, 3, seed=1)
    loss, _ = model.train().training_loss(x)
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and "pos_emb" not in n)
    model.eval().save_pretrained(tmp_path / name)
    loaded = from_pretrained(tmp_path / name)
    tokens = model.encode(x)
    assert loaded.config == model.config and torch.equal(loaded.encode(x), tokens)
    assert loaded.decode(tokens).shape == model.decode(tokens).shape


def test_check_command_loads_a_released_folder(capsys):
    from tokenize_stage.__main__ import main

    assert main(["check", str(FIXTURES / "tiny" / "sam_mask")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tokenizer"] == "mask_vq" and out["strict_load"] == "ok" and out["tokens_shape"] == [2, 16]
    weights = load_file(str(FIXTURES / "tiny" / "sam_mask" / "model.safetensors"))
    assert out["parameters"] == sum(v.numel() for k, v in weights.items() if "_codebook" not in k)


@pytest.mark.parametrize("fixture", sorted(TINY))
def test_export_reproduces_the_released_files(tmp_path, fixture):
    """Loading a released folder and writing it back in the release format gives the same tensors, bit for
    bit, and the same config (MLP tokenizers: up to the image/patch sizes they do not use)."""
    folder = FIXTURES / "tiny" / fixture
    save_ml4m(from_pretrained(folder), tmp_path)
    ref, ours = load_file(str(folder / "model.safetensors")), load_file(str(tmp_path / "model.safetensors"))
    assert set(ref) == set(ours) and all(torch.equal(ref[k], ours[k]) for k in ref)
    ref_cfg, our_cfg = (json.loads((d / "config.json").read_text()) for d in (folder, tmp_path))
    unused = {"image_size", "patch_size"} if ref_cfg["quant_type"] == "memcodes" else set()
    assert {k: v for k, v in our_cfg.items() if k not in unused} == {k: v for k, v in ref_cfg.items() if k not in unused}


def test_our_ml4m_diffusion_tokenizer_exports_and_reloads(tmp_path):
    model = build_tokenizer(tokenizer_config("normal_diffusion", "tiny", layout="ml4m")).eval()
    save_ml4m(model, tmp_path)
    loaded = from_pretrained(tmp_path, tokenizer="normal_diffusion")
    x = synthetic_batch(model.config, 2, seed=3)
    assert torch.equal(loaded.encode(x), model.encode(x))


@pytest.mark.parametrize("released", ["DINOv2-B14-global_8k_16_224", "ImageBind-H14-global_8k_16_224"])
def test_global_tokenizers_give_the_16_tokens_the_released_4m21_reads(released, tmp_path):
    """Token count = Memcodes heads = ``num_codebooks`` of the config. The reference yaml (and so the key table
    and the tiny fixture) say 8, but the released 4M-21 reads 16 positions (its ``tok_*_global.pos_emb`` has 16
    rows) and the repositories are named ``..._16_``: ours follow the config, the 16-token form loads strictly,
    and importing an 8-token one for the official preset is refused."""
    from fourm_core.modalities import get_modality
    from tokenize_stage.official import check_global_token_count

    table = json.loads((FIXTURES / "released" / f"{released}.keys.json").read_text())
    config = config_from_ml4m(table["constructor_kwargs"], {k: tuple(v["shape"]) for k, v in table["tensors"].items()},
                              hint=table["hub_id"])
    modality = get_modality(config.modality)
    fm = json.loads((FIXTURES.parent / "fm" / "keys" / "4M-21_B.keys.json").read_text())["tensors"]
    assert fm[f"encoder_embeddings.{modality.name}.pos_emb"]["shape"][1] == modality.max_tokens == 16
    assert tokenizer_config(config.name, "production").n_tokens == 16  # what our own training builds
    assert config.n_tokens == table["constructor_kwargs"]["num_codebooks"] == 8  # the yaml's count, as written
    # the released form: 16 heads over the same 1024-d latent (64 per head)
    kwargs = dict(table["constructor_kwargs"], num_codebooks=16)
    shapes = {k: tuple(v["shape"]) for k, v in table["tensors"].items()}
    shapes |= {"quantize.codes": (16, 8192, 64), "quantize.to_k.weight": (16, 64, 64),
               "quantize.to_v.weight": (16, 64, 64)}
    config16 = config_from_ml4m(kwargs, shapes, hint=table["hub_id"])
    with torch.device("meta"):
        model = build_tokenizer(config16)
    model.load_state_dict(state_dict_from_ml4m({k: torch.empty(s, device="meta") for k, s in shapes.items()}, config16),
                          strict=True, assign=True)
    assert model.n_tokens == 16
    tiny = {"DINOv2-B14-global_8k_16_224": "dinov2_global", "ImageBind-H14-global_8k_16_224": "imagebind_global"}
    eight = from_pretrained(FIXTURES / "tiny" / tiny[released])
    with pytest.raises(ValueError, match=r"gives 8 tokens per embedding .* holds 16 .*_8k_16_224"):
        check_global_token_count(eight, "the-8-token-folder")
    sixteen = build_tokenizer(tokenizer_config(config.name, "tiny", layout="ml4m"))
    save_ml4m(sixteen, tmp_path)
    check_global_token_count(from_pretrained(tmp_path, tokenizer=config.name), str(tmp_path))
