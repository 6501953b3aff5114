"""``tokens/caption``: the tokenize stage's caption unit, its format, caching and the loader reading it back."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pytest
import torch

from fourm_core.config import DatasetConfig, SyntheticSource
from fourm_core.reference_data import reference_file
from fourm_core.units import Unit, UnitOutput, run_unit
from tokenize_stage.captions import CAPTION_ARTIFACT
from tokenize_stage.stage import STAGE, artifacts_for
from tokenize_stage.text.wordpiece import REFERENCE_TOKENIZER, decode

CAPTIONS = ["A purple suitcase, a green sports ball and a green sports ball on the grass under a blue sky",
            None,
            "An orange cup and a Traffic Light on a tiled floor",
            "   "]


def _config(**tokenize) -> DatasetConfig:
    return DatasetConfig(name="capt", sources=[SyntheticSource()], tokenize={"profile": "tiny", **tokenize})


def _commit_images(store, captions=CAPTIONS, shard=0):
    """An ``images`` part with just the columns the caption unit reads (ingest writes more)."""
    keys = [f"k{shard}-{i}" for i in range(len(captions))]
    unit = Unit(stage="ingest", dataset="capt", artifacts=["images"], shard=shard, code_version="test/1",
                config={"captions": captions})
    table = pa.table({"sample_key": keys, "caption": pa.array(captions, pa.string())})
    return run_unit(store, unit, lambda: UnitOutput({"images": table})).manifests[0]


def test_caption_tokens_round_trip_and_cache(store, ref_tok):
    images = _commit_images(store)
    config = _config()
    assert STAGE.plan_shards(store, config) == [0]
    [result] = STAGE.run_shard(store, config, 0)  # no label shards, no tokenizers: just the caption unit
    assert result.status.value == "done" and result.artifacts == [CAPTION_ARTIFACT]
    table = store.read_table("capt", CAPTION_ARTIFACT, 0)
    assert table.schema.field("tokens").type == pa.list_(pa.int16()) and table.schema.field("crop").type == pa.int16()
    rows = table.to_pylist()
    assert [r["sample_key"] for r in rows] == ["k0-0", "k0-2"] and {r["crop"] for r in rows} == {0}
    for r in rows:
        assert r["tokens"] == ref_tok.encode(r["text"], add_special_tokens=False).ids
        assert decode(ref_tok, r["tokens"]) == r["text"].lower()  # lower-cased by the BERT normaliser
    assert ref_tok.token_to_id("traffic light") in rows[1]["tokens"]  # class names are one token
    errors = store.read_errors("capt", CAPTION_ARTIFACT, 0).to_pylist()
    assert sorted((e["sample_key"], e["reason"]) for e in errors) == [("k0-1", "no_caption"), ("k0-3", "no_caption")]
    m = store.read_manifest("capt", CAPTION_ARTIFACT, 0)
    assert m.ingredients.model.digest == hashlib.sha256(reference_file(REFERENCE_TOKENIZER).read_bytes()).hexdigest()
    assert [i.digest for i in m.ingredients.inputs] == [images.digest]
    # cached on the same inputs and tokenizer; new captions redo the unit
    assert [r.status.value for r in STAGE.run_shard(store, config, 0)] == ["cached"]
    _commit_images(store, ["a dog"] * 2)
    assert [r.status.value for r in STAGE.run_shard(store, config, 0)] == ["done"]
    assert store.read_table("capt", CAPTION_ARTIFACT, 0).column("text").to_pylist() == ["a dog"] * 2


def test_training_loader_reads_caption_tokens(store):
    from train_stage.data import DatasetSpec, TokenShardStream
    from train_stage.masking import Masker
    from train_stage.mixture import load_mixture

    _commit_images(store)
    STAGE.run_shard(store, _config(), 0)
    mix = load_mixture("demo").model_copy(update={"modalities": ["caption"], "input_budget": 32,
                                                 "target_budget": 32})
    stream = TokenShardStream(store.root_uri, [DatasetSpec("capt", 1.0, ("caption",))], Masker(mix), batch_size=2)
    raw = stream.raw_batch(0)
    table = {r["sample_key"]: r["tokens"] for r in store.read_table("capt", CAPTION_ARTIFACT, 0).to_pylist()}
    for j, key in enumerate(raw.keys):
        n = int(raw.lengths["caption"][j])
        assert raw.tokens["caption"][j, :n].tolist() == table[key] and n == len(table[key])
    assert torch.all(raw.tokens["caption"][raw.lengths["caption"] == 0] == 0)


def test_caption_artifact_is_configured():
    assert CAPTION_ARTIFACT == "tokens/caption"
    assert CAPTION_ARTIFACT in artifacts_for(_config())
    assert CAPTION_ARTIFACT in STAGE.artifacts
    assert CAPTION_ARTIFACT not in artifacts_for(_config(captions=False))
    assert artifacts_for(_config(modalities=["tok_semseg@224"])) == ["tokens/tok_semseg-224", "tokens/_crops"]
    assert artifacts_for(_config(modalities=["caption"])) == [CAPTION_ARTIFACT]
    from fourm_core.config import ConfigError

    assert artifacts_for(_config(modalities=["det"])) == ["tokens/det", "tokens/_crops"]  # a sequence modality
    with pytest.raises(ConfigError, match="t5_caption"):
        artifacts_for(_config(modalities=["t5_caption"]))
