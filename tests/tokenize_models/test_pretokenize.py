"""Pre-tokenization stage: token shards per (modality, shard), shared crops, caching keyed on the
tokenizer digest, and resume after a kill without duplicates."""

import pyarrow as pa
import pytest

from fourm_core.config import DatasetConfig, SyntheticSource
from fourm_core.modalities import MODALITIES
from tokenize_stage.crops import CropConfig, apply_crop, crop_for
from tokenize_stage.labels import commit_synthetic_labels
from tokenize_stage.stage import CROPS_ARTIFACT, STAGE
from tokenize_stage.train_tokenizer import TrainTokenizerConfig, train_tokenizer

SEMSEG, GLOBAL = MODALITIES["tok_semseg@224"], MODALITIES["tok_dinov2_global"]


def _config(**tokenize):
    return DatasetConfig(name="syn", sources=[SyntheticSource()],
                         tokenize={"profile": "tiny", "crops": {"n_crops": 2}, **tokenize})


@pytest.fixture
def ready(store):
    for name in ("semseg_vqvae", "dinov2_global_memcodes"):
        commit_synthetic_labels(store, "syn", name, n_samples=40, shard_size=20)
        train_tokenizer(store, "syn", TrainTokenizerConfig(tokenizer=name, steps=3, eval_samples=8))
    return store


def test_token_shards_and_shared_crops(ready):
    store, config = ready, _config()
    assert STAGE.plan_shards(store, config) == [0, 1]
    results = STAGE.run_shard(store, config, 0)
    assert [r.status.value for r in results] == ["done"] * 3
    assert SEMSEG.token_artifact == "tokens/tok_semseg-224"
    sem = store.read_table("syn", SEMSEG.token_artifact, 0)
    glo = store.read_table("syn", GLOBAL.token_artifact, 0)
    crops = store.read_table("syn", CROPS_ARTIFACT, 0)
    assert sem.num_rows == glo.num_rows == crops.num_rows == 20 * 2
    assert sem.schema.field("tokens").type == pa.list_(pa.int16()) and sem.schema.field("crop").type == pa.int16()
    assert {len(t) for t in sem.column("tokens").to_pylist()} == {16}
    assert {len(t) for t in glo.column("tokens").to_pylist()} == {16}
    def key(t):
        return list(zip(t.column("sample_key").to_pylist(), t.column("crop").to_pylist()))

    assert key(sem) == key(glo) == key(crops)  # the same (sample, crop) pairs in every modality
    row = crops.to_pylist()[3]
    expected = crop_for(CropConfig(n_crops=2), row["sample_key"], row["crop"])
    assert row["box"] == pytest.approx(list(expected.box)) and row["flip"] == expected.flip


def test_changed_tokenizer_retokenizes_only_its_modality(ready):
    store, config = ready, _config()
    assert not STAGE.shard_is_cached(store, config, 0)
    STAGE.run_shard(store, config, 0)
    assert {r.status.value for r in STAGE.run_shard(store, config, 0)} == {"cached"}
    # the orchestrator sees that without running the shard (so it starts no Ray for it)
    assert [r.artifacts[0] for r in STAGE.cached_results(store, config, 0)] == \
        [CROPS_ARTIFACT, SEMSEG.token_artifact, GLOBAL.token_artifact]
    train_tokenizer(store, "syn", TrainTokenizerConfig(tokenizer="semseg_vqvae", steps=3, eval_samples=8, seed=1))
    assert not STAGE.shard_is_cached(store, config, 0)
    status = {r.artifacts[0]: r.status.value for r in STAGE.run_shard(store, config, 0)}
    assert status == {CROPS_ARTIFACT: "cached", SEMSEG.token_artifact: "done", GLOBAL.token_artifact: "cached"}


def test_resume_after_kill_without_duplicates(ready):
    store, config = ready, _config()
    for shard in STAGE.plan_shards(store, config):
        STAGE.run_shard(store, config, shard)
    # A kill before the manifest was written: the data file may exist, the manifest does not.
    store.remove(store.manifest_path("syn", SEMSEG.token_artifact, 1))
    status = [(r.artifacts[0], r.status.value) for s in (0, 1) for r in STAGE.run_shard(store, config, s)]
    assert [a for a, st in status if st == "done"] == [SEMSEG.token_artifact]
    assert store.committed_shards("syn", SEMSEG.token_artifact) == [0, 1]
    rows = store.read_table("syn", SEMSEG.token_artifact, 1)
    pairs = list(zip(rows.column("sample_key").to_pylist(), rows.column("crop").to_pylist()))
    assert len(pairs) == len(set(pairs)) == 40


def test_flip_negates_normal_x():
    import numpy as np

    from tokenize_stage.crops import Crop

    n = np.zeros((4, 4, 3), np.float32)
    n[..., 0], n[..., 2] = 0.6, 0.8
    out = apply_crop(n, Crop((0, 0, 1, 1), True), "normal")
    assert np.allclose(out[..., 0], -0.6) and np.allclose(out[..., 2], 0.8)


def test_units_through_the_index_equal_units_from_manifests(ready):
    """The orchestrator builds every shard's units through the index (input refs from its columns, no manifest
    parsed); they must be the units a worker builds from the manifests: same inputs, same cache keys."""
    from fourm_core.stage import units_of_run_shard
    from fourm_core.store import ArtifactStore
    from tokenize_stage.stage import run_shard

    store, config = ready, _config()
    STAGE.run_shard(store, config, 0)
    units = units_of_run_shard(run_shard)
    plain = units(ArtifactStore(store.root_uri), config, 0)
    indexed = units(ArtifactStore(store.root_uri, use_index=True), config, 0)
    assert [(u.artifacts, u.inputs, u.cache_key) for u in indexed] == [(u.artifacts, u.inputs, u.cache_key) for u in plain]
    assert len(plain) == 3 and all(u.inputs for u in plain)
    assert STAGE.shard_is_cached(ArtifactStore(store.root_uri, use_index=True), config, 0)
