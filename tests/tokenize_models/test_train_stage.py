"""Tokenizer training as a stage unit: committed artifact with manifest, lineage to the label shards,
model card + PNG + metrics, cache hits, and loading the committed tokenizer back."""

import json


from fourm_core.lineage import lineage
from tokenize_stage.__main__ import main
from tokenize_stage.labels import commit_synthetic_labels
from tokenize_stage.synthetic import synthetic_batch
from tokenize_stage.train_tokenizer import TrainTokenizerConfig, load_trained, tokenizer_artifact, train_tokenizer

CFG = TrainTokenizerConfig(tokenizer="mask_vq", profile="tiny", steps=30, eval_samples=16)


def test_commit_lineage_cache_and_load(store):
    labels = commit_synthetic_labels(store, "syn", "mask_vq", n_samples=64, shard_size=32)
    first = train_tokenizer(store, "syn", CFG)
    assert first.status.value == "done"
    m = first.manifests[0]
    assert m.artifact == tokenizer_artifact("mask_vq", "tiny") == "tokenizers/mask_vq-tiny" and m.shard is None
    assert {i.digest for i in m.ingredients.inputs} == {l.digest for l in labels}
    names = {f.name for f in m.files}
    assert {"data.safetensors", "data.config.json", "data.card.md", "data.report.png", "data.metrics.json"} <= names
    d = store.artifact_dir("syn", m.artifact)
    assert store.read_bytes(f"{d}/data.report.png")[:4] == b"\x89PNG"
    card = store.read_bytes(f"{d}/data.card.md").decode()
    assert "Tokenizer bound" in card and "labels/sam_instance" in card and "steps: 30" in card
    metrics = json.loads(store.read_bytes(f"{d}/data.metrics.json"))
    assert metrics["primary"] == "iou" and "iou" in metrics["baseline"]

    node = lineage(store, "syn", m.artifact, None)  # walks upstream to the label shards
    assert len(node.parents) == 2 and not node.missing

    assert train_tokenizer(store, "syn", CFG).status.value == "cached"

    model, ref = load_trained(store, "syn", "mask_vq", "tiny")
    assert ref.digest == next(f.digest for f in m.files if f.name == "data.safetensors")
    x = synthetic_batch(model.config, 4, seed=5)
    assert model.encode(x).shape == (4, 16)


def test_more_label_shards_retrain(store):
    commit_synthetic_labels(store, "syn", "pose_vq", n_samples=48, shard_size=48)
    cfg = CFG.model_copy(update={"tokenizer": "pose_vq"})
    assert train_tokenizer(store, "syn", cfg).status.value == "done"
    commit_synthetic_labels(store, "syn", "pose_vq", n_samples=96, shard_size=48)  # a new shard lands
    assert train_tokenizer(store, "syn", cfg).status.value == "done"


def test_cli_train(store_root, capsys):
    assert main(["train", "--tokenizer", "pose_vq", "--store", store_root, "--dataset", "syn", "--synthetic", "64",
                 "--steps", "20", "--eval-samples", "16"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "done" and "l1" in out["metrics"]["model"]
