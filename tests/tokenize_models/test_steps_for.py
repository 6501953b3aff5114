"""`tokenize.train.steps_for`: one tokenizer trains longer than the rest (the demo's RGB tokenizer), and only its
cache key says so."""

from __future__ import annotations

import pytest
from fourm_core.config import ConfigError, DatasetConfig, SyntheticSource
from tokenize_stage import training_stage
from tokenize_stage.stage import pretokenize_config
from tokenize_stage.labels import commit_synthetic_labels

NAMES = ["mask_vq", "pose_vq"]


def _config(**train) -> DatasetConfig:
    return DatasetConfig(name="syn", sources=[SyntheticSource()], tokenize={
        "profile": "tiny", "train": {"tokenizers": NAMES, "steps": 3, "batch_size": 8, "eval_samples": 8, **train}})


def _by_name(results) -> dict:
    return {r.manifests[0].artifact.rsplit("/", 1)[-1].removesuffix("-tiny"): r for r in results}


def test_a_tokenizer_named_in_steps_for_trains_that_many_steps_and_the_rest_keep_theirs(store):
    for name in NAMES:
        commit_synthetic_labels(store, "syn", name, n_samples=24, shard_size=24)
    plain = _by_name(training_stage.run_shard(store, _config(), 0))
    longer = _by_name(training_stage.run_shard(store, _config(steps_for={"pose_vq": 5}), 0))
    assert {n: r.manifests[0].stats["train"]["steps"] for n, r in longer.items()} == {"mask_vq": 3, "pose_vq": 5}
    assert longer["mask_vq"].status.value == "cached"  # its key did not change
    assert longer["pose_vq"].status.value == "done" and plain["pose_vq"].status.value == "done"


@pytest.mark.parametrize("steps_for, words", [({"rgb_diffusion": 600}, "does not train"),
                                              ({"pose_vq": 0}, "must be positive")])
def test_a_bad_steps_for_names_the_field_and_the_fix(steps_for, words):
    with pytest.raises(ConfigError, match=rf"(?s)dataset syn: tokenize.*steps_for.*{words}"):
        pretokenize_config(_config(steps_for=steps_for))
