"""save_pretrained -> from_pretrained (local dir and fsspec URL) gives identical tokens and decodes."""

import pytest
import torch

from tokenize_stage.models.hub import build_tokenizer, from_pretrained
from tokenize_stage.models.vqvae import VQVAE
from tokenize_stage.registry import tokenizer_config
from tokenize_stage.synthetic import synthetic_batch


@pytest.mark.parametrize("name", ["semseg_vqvae", "mask_vq", "pose_vq", "depth_diffusion"])
def test_round_trip_identical_tokens(tmp_path, name):
    torch.manual_seed(0)
    model = build_tokenizer(tokenizer_config(name, "tiny"))
    x = synthetic_batch(model.config, 3, seed=1)
    model.train()
    model.training_loss(x)  # move EMA buffers away from their init so buffers are really saved
    model.eval()
    model.save_pretrained(tmp_path / name)
    loaded = from_pretrained(tmp_path / name)
    assert type(loaded) is type(model) and loaded.config == model.config
    tokens = model.encode(x)
    assert torch.equal(loaded.encode(x), tokens)
    assert torch.equal(loaded.decode(tokens), model.decode(tokens))


def test_fsspec_url_and_wrong_class(tmp_path):
    model = build_tokenizer(tokenizer_config("pose_vq", "tiny")).eval()
    model.save_pretrained(tmp_path / "pose")
    loaded = from_pretrained(f"file://{tmp_path / 'pose'}")
    x = torch.randn(2, 207)
    assert torch.equal(loaded.encode(x), model.encode(x))
    with pytest.raises(TypeError):
        from_pretrained(tmp_path / "pose", expect=VQVAE)


def test_missing_files_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        from_pretrained(tmp_path)
