"""SAM model loading: tiny profile saved as safetensors and loaded back; .pth state dicts; fsspec URIs."""

from __future__ import annotations

import hashlib

import fsspec
import pytest
import torch

from pseudolabel.sam.model import PROFILES, build_sam, infer_profile, load_sam, save_sam


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_tiny_round_trip_through_safetensors(tmp_path):
    model = build_sam("tiny", seed=3)
    digest = save_sam(model, tmp_path, "tiny")
    loaded = load_sam(str(tmp_path))
    assert loaded.profile == "tiny"
    assert loaded.ref.digest == digest == _sha(tmp_path / "model.safetensors")
    assert loaded.ref.source == str(tmp_path) and loaded.ref.id == "sam:tiny"
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), k
    # The tiny profile keeps SAM's contracts relative to img_size: 16x16 grid, 4x low-res masks.
    assert loaded.model.image_encoder.img_size == PROFILES["tiny"].img_size == 256
    assert loaded.model.prompt_encoder.image_embedding_size == (16, 16)


def test_seed_changes_weights():
    a, b = build_sam("tiny", seed=0).state_dict(), build_sam("tiny", seed=1).state_dict()
    assert not torch.equal(a["mask_decoder.iou_token.weight"], b["mask_decoder.iou_token.weight"])


def test_plain_pth_state_dict_without_config(tmp_path):
    """Official checkpoints are bare state dicts (loaded with weights_only=True); profile inferred."""
    model = build_sam("tiny", seed=1)
    path = tmp_path / "sam_tiny.pth"
    torch.save(model.state_dict(), path)
    assert infer_profile(model.state_dict()) == "tiny"
    loaded = load_sam(str(path))
    assert loaded.profile == "tiny" and loaded.ref.digest == _sha(path)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.equal(model.image_encoder(x), loaded.model.image_encoder(x))


def test_fsspec_uri_is_fetched(tmp_path):
    """s3:// goes through fsspec like any remote URI; memory:// exercises the same path offline."""
    save_sam(build_sam("tiny", seed=2), tmp_path / "m", "tiny")
    fs = fsspec.filesystem("memory")
    for name in ("model.safetensors", "sam_config.json"):
        fs.pipe(f"/sam-test/{name}", (tmp_path / "m" / name).read_bytes())
    loaded = load_sam("memory://sam-test", cache_dir=str(tmp_path / "cache"))
    assert loaded.profile == "tiny"
    assert loaded.ref.digest == _sha(tmp_path / "m" / "model.safetensors")
    assert loaded.ref.source == "memory://sam-test"


def test_missing_weights_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_sam(str(tmp_path))


def test_vit_profiles_match_segment_anything():
    from segment_anything import sam_model_registry

    ours = PROFILES["vit_b"]
    ref = sam_model_registry["vit_b"]()
    assert ref.image_encoder.patch_embed.proj.weight.shape[0] == ours.encoder_embed_dim
    assert len(ref.image_encoder.blocks) == ours.encoder_depth
    ours_state = build_sam("vit_b").state_dict()
    assert {k: v.shape for k, v in ours_state.items()} == {k: v.shape for k, v in ref.state_dict().items()}
