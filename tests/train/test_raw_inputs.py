"""4M-21 trains with its raw inputs: RGB pixels (cut with the sample's crop) and T5 caption embeddings are
read from their shards only when the model takes them, and the ``4m21_b`` preset trains at tiny size on a
store with all 21 modalities (plus a caption-only C4 whose batches carry neither input)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fourm_core import ArtifactStore
from fourm_core.crops import Crop
from fourm_core.image_decode import decode_image
from fourm_core.label_codec import f16_decode
from fourm_core.modalities import FOURM21
from train_stage.batch import MODALITY_INDEX
from train_stage.config import load_train_config
from train_stage.data import DatasetSpec, TokenShardStream
from train_stage.masking import Masker
from train_stage.mixture import load_mixture
from train_stage.pixels import IMAGENET_MEAN, IMAGENET_STD
from train_stage.synthetic import make_token_shards, synthetic_crop_box
from train_stage.trainer import Trainer

MODS = ["rgb@224", "t5_caption", "caption", "tok_depth@224"]


@pytest.fixture
def raw_store(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    make_token_shards(store, "cc", MODS, n_shards=1, shard_size=4, n_crops=2)
    return store


def _stream(store, mods=MODS):
    masker = Masker(load_mixture("4m21").model_copy(update={"modalities": mods, "input_budget": 64,
                                                            "target_budget": 64}))
    return TokenShardStream(store.root_uri, [DatasetSpec("cc", 1.0, tuple(mods))], masker, batch_size=4)


def test_pixels_are_cut_with_the_samples_crop_and_t5_rows_are_read(raw_store):
    stream = _stream(raw_store)
    shard = stream._shard(raw_store, {}, 0, 0)
    key = shard.keys[1]
    raw = stream.collate([(0, shard, key, 1), (0, shard, key, 0)])
    px = raw.pixels["rgb@224"]
    assert px.shape == (2, 196, 768) and raw.lengths["rgb@224"].tolist() == [196, 196]
    # expected: the stored image, crop 1's box and flip from tokens/_crops, 224², ImageNet statistics
    img = decode_image(raw_store.read_table("cc", "images", 0).to_pylist()[1]["image"])
    box, flip = synthetic_crop_box(1)
    assert flip  # crop 1 is mirrored: a flip that were ignored would show
    a = img[round(box[1] * 40):round(box[3] * 40), round(box[0] * 56):round(box[2] * 56)][:, ::-1]
    x = torch.nn.functional.interpolate(torch.from_numpy(a.astype(np.float32) / 255).permute(2, 0, 1)[None],
                                        size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    x = (x[0].clamp(0, 1) - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    patches = x.reshape(3, 14, 16, 14, 16).permute(1, 3, 2, 4, 0).reshape(196, 768)
    torch.testing.assert_close(px[0], patches, atol=1e-5, rtol=0)
    assert not torch.allclose(px[0], px[1])  # crop 0 is another cut
    assert shard.crops[(key, 1)] == Crop(tuple(np.float32(v).item() for v in box), True)
    # T5 rows: the label shard's float16 rows as stored (the model casts them), zero-padded to the batch's longest
    row = raw_store.read_table("cc", "labels/t5_caption", 0).to_pylist()[1]
    n = row["n_tokens"]
    assert raw.lengths["t5_caption"].tolist() == [n, n]
    emb = raw.embeddings["t5_caption"]
    assert emb.dtype == torch.float16
    torch.testing.assert_close(emb[0, :n].float(), torch.from_numpy(f16_decode(row["embedding"], (n, 4096))),
                               atol=0, rtol=0)


def test_raw_inputs_are_read_only_when_the_model_takes_them(raw_store):
    stream = _stream(raw_store, ["caption", "tok_depth@224"])
    raw = stream.raw_batch(0)
    assert not raw.pixels and not raw.embeddings and "rgb@224" not in raw.lengths
    refs = {r.artifact for r in stream.input_refs()}
    assert refs == {"tokens/caption", "tokens/tok_depth-224"}
    assert {r.artifact for r in _stream(raw_store).input_refs()} >= {"images", "labels/t5_caption", "tokens/_crops"}


def test_4m21_preset_trains_at_tiny_size_with_pixels_and_t5(tmp_path):
    """The ``4m21_b`` preset (its datasets, mixtures and all 21 modalities) at tiny width: batches carry RGB
    pixels and T5 embeddings, a C4 (caption only) sample has neither, and both input projections train."""
    store = ArtifactStore(str(tmp_path / "store"))
    for name in ("cc12m", "coyo700m"):
        make_token_shards(store, name, list(FOURM21), n_shards=1, shard_size=6, n_crops=2)
    make_token_shards(store, "c4", ["caption"], n_shards=1, shard_size=6)
    cfg = load_train_config("4m21_b", {"model.size": "tiny", "model.overrides": {"dim": 32, "num_heads": 2},
                                       "batch_size": 6, "steps": 2, "num_workers": 0, "compile": False,
                                       "dtype": "fp32", "threads": 1, "warmup_tokens": 0, "total_tokens": None,
                                       "input_budget": 96, "target_budget": 64, "checkpoint_every": 0,
                                       "peak_flops": None})
    assert [d.name for d in cfg.datasets] == ["cc12m", "coyo700m", "c4"]
    t = Trainer(cfg, store)
    batch = t.stream.make_batch(0)
    assert batch.pixels["rgb@224"].shape[1:] == (196, 768) and batch.embeddings["t5_caption"].shape[2] == 4096
    for m in ("rgb@224", "t5_caption"):
        assert (batch.enc_modality == MODALITY_INDEX[m]).any(), m  # they reach the encoder
    raw = t.stream.raw_batch(0)
    c4 = raw.dataset == 2
    assert c4.any() and (raw.lengths["rgb@224"][c4] == 0).all() and (raw.lengths["rgb@224"][~c4] == 196).all()
    # a batch of C4 samples only carries neither input; the model takes it
    text_only = t.stream.masker(t.stream.collate([s for s in _samples(t.stream, 0) if s[0] == 2]))
    assert not text_only.pixels and not text_only.embeddings
    assert torch.isfinite(t.model(text_only).loss)
    proj = t.model.encoder_embeddings["rgb@224"].proj.weight.detach().clone()
    emb_proj = t.model.encoder_embeddings["t5_caption"].emb_proj.weight.detach().clone()
    t.fit()
    assert len(t.history) == 2 and all(np.isfinite(r["loss"]) for r in t.history)
    assert not torch.equal(proj, t.model.encoder_embeddings["rgb@224"].proj.weight)
    assert not torch.equal(emb_proj, t.model.encoder_embeddings["t5_caption"].emb_proj.weight)


def _samples(stream, b):
    """The (dataset, shard, key, crop) samples of batch ``b`` (what ``raw_batch`` collates)."""
    captured = []
    real = stream.collate
    stream.collate = lambda samples: captured.extend(samples) or real(samples)
    try:
        stream.raw_batch(b)
    finally:
        stream.collate = real
    return captured
