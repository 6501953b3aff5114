"""Fused feature labelling + tokenization outside the feature subset: only tokens are stored, and they are
the tokens the two-pass path (stored features, then tokenize) gives."""

import pytest

from fourm_core.config import DatasetConfig
from fourm_core.modalities import MODALITIES
from fourm_core.units import UnitStatus
from pseudolabel.stage import run_shard as pseudolabel_shard
from pseudolabel.testing import commit_images, demo_samples
from tokenize_stage.stage import STAGE
from tokenize_stage.train_tokenizer import TrainTokenizerConfig, train_tokenizer

PATCHES, GLOBAL = MODALITIES["tok_dinov2@224"], MODALITIES["tok_dinov2_global"]
WHOLE_IMAGE = {"n_crops": 1, "scale": [1.0, 1.0], "ratio": [1.0, 1.0], "flip_prob": 0.0}


def _config(feature_shards):
    return DatasetConfig(name="fz", sources=[{"kind": "synthetic"}],
                         pseudolabel={"labelers": ["dinov2"], "profile": "tiny", "runner": "local",
                                      "feature_subset": {"shards": feature_shards}},
                         tokenize={"profile": "tiny", "crops": WHOLE_IMAGE})


@pytest.fixture
def trained(store):
    commit_images(store, "fz", 0, demo_samples(0, 6, size=64))
    commit_images(store, "fz", 1, demo_samples(1, 4, size=64, photos=False))
    cfg = _config([0])
    for shard in (0, 1):
        pseudolabel_shard(store, cfg, shard)
    for name in ("dinov2_vqvae", "dinov2_global_memcodes"):
        train_tokenizer(store, "fz", TrainTokenizerConfig(tokenizer=name, profile="tiny", steps=3, eval_samples=2))
    return store, cfg


def test_outside_the_feature_subset_only_tokens_are_stored_and_match_two_pass(trained):
    store, cfg = trained
    assert store.committed_shards("fz", "labels/dinov2_features") == [0]  # the feature subset
    results = {r.stage: r for r in STAGE.run_shard(store, cfg, 1)}
    fused = results["tokenize.fused"]
    assert fused.status is UnitStatus.DONE and fused.artifacts == [PATCHES.token_artifact, GLOBAL.token_artifact]
    assert store.committed_shards("fz", "labels/dinov2_features") == [0]  # still no raw features for shard 1
    fused_tokens = {m.name: store.read_table("fz", m.token_artifact, 1).to_pylist() for m in (PATCHES, GLOBAL)}
    assert len(fused_tokens[PATCHES.name]) == 4
    assert store.read_table("fz", "tokens/_crops", 1).num_rows == 4  # crops cover the fused samples
    assert STAGE.shard_is_cached(store, cfg, 1)  # the orchestrator sees the fused unit as cached
    manifest = store.read_manifest("fz", PATCHES.token_artifact, 1)
    assert [i.artifact for i in manifest.ingredients.inputs] == ["images"]
    assert manifest.ingredients.model.id == "dinov2:tiny"

    # two-pass on the same shard: store its features, tokenize them; whole-image crops give the same tokens
    everything = _config([0, 1])
    pseudolabel_shard(store, everything, 1)
    results = {r.artifacts[0]: r for r in STAGE.run_shard(store, everything, 1)}
    assert results[PATCHES.token_artifact].stage == "tokenize"
    for m in (PATCHES, GLOBAL):
        assert store.read_table("fz", m.token_artifact, 1).to_pylist() == fused_tokens[m.name]


def test_fused_off_leaves_the_shard_without_feature_tokens(trained):
    store, cfg = trained
    off = cfg.model_copy(update={"tokenize": {**cfg.tokenize, "fused": False}})
    assert "tokenize.fused" not in {r.stage for r in STAGE.run_shard(store, off, 1)}
    assert store.committed_shards("fz", PATCHES.token_artifact) == []
