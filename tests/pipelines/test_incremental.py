"""The nightly cc12m build on a growing URL list, at tiny size: the preset's own stages (ingest -> pseudolabel ->
train-tokenizers -> tokenize) through the real flow; a second night with more lines runs only the new shard's
units. Tokenizers train once on the declared subset (``tokenize.train.shards``) and stay cached.
"""

from __future__ import annotations

import pytest

from fourm_core import ArtifactStore
from fourm_core.config import load_dataset_config
from fourm_core.modalities import MODALITIES
from pipelines.build_dataset import build_dataset
from tests.ingest import media
from tests.ingest.server import LoopbackServer, Routes

pytestmark = pytest.mark.slow
EDGE_TOKENS = MODALITIES["tok_canny_edge@224"].token_artifact

# The cc12m preset at tiny size: same stages, one cheap labeler (Canny edges) and its tokenizer, trained on shard 0.
TINY = {"ingest.shard_size": 4, "ingest.shorter_side": 64,
        "ingest.download": {"timeout_s": 5, "retries": 1, "backoff_s": 0.02, "concurrency": 4},
        "pseudolabel.profile": "tiny", "pseudolabel.runner": "local", "pseudolabel.labelers": ["canny"],
        "pseudolabel.feature_subset": {"shards": [0]},
        "tokenize.profile": "tiny", "tokenize.crops": {"n_crops": 1},
        "tokenize.train": {"tokenizers": ["edge_diffusion"], "shards": [0], "steps": 2, "batch_size": 2,
                           "eval_samples": 1}}


@pytest.fixture
def images():
    routes = Routes()
    for i in range(12):
        routes.add(f"/img/{i}.jpg", media.jpeg(w=96, h=80, seed=i))
    with LoopbackServer(routes) as server:
        yield server


def _done(result) -> dict[str, list[int | None]]:
    """unit stage -> shards of the units this run computed (not cached)."""
    out: dict[str, list[int | None]] = {}
    for u in result["units"]:
        if u["status"] == "done":
            out.setdefault(u["stage"], []).append(u["shard"])
    return {k: sorted(set(v), key=str) for k, v in out.items()}


def test_new_shards_run_alone(prefect_api, images, tmp_path, monkeypatch):
    tsv = tmp_path / "cc12m.tsv"
    monkeypatch.setenv("CC12M_TSV", str(tsv))
    lines = [f"{images.url(f'/img/{i}.jpg')}\tphoto number {i}\n" for i in range(12)]
    tsv.write_text("".join(lines[:8]))  # night 1: two shards
    root = str(tmp_path / "store")
    config = load_dataset_config("cc12m", TINY)
    assert config.stages == ["ingest", "pseudolabel", "train-tokenizers", "tokenize"]

    first = build_dataset(dataset="cc12m", store_root=root, ray_address="off", overrides=TINY)
    assert _done(first) == {"ingest": [0, 1], "pseudolabel": [0, 1], "tokenize.train": [None],
                            "tokenize.crops": [0, 1], "tokenize": [0, 1]}
    store = ArtifactStore(root)
    tokenizer = store.read_manifest("cc12m", "tokenizers/edge_diffusion-tiny", None)
    assert [i.shard for i in tokenizer.ingredients.inputs] == [0]  # the declared subset, nothing else
    old_tokens = store.read_manifest("cc12m", EDGE_TOKENS, 1)
    assert old_tokens is not None and "edge_diffusion" in old_tokens.ingredients.model.id  # keyed on its weights

    tsv.write_text("".join(lines))  # night 2: the list gained a shard
    second = build_dataset(dataset="cc12m", store_root=root, ray_address="off", overrides=TINY)
    assert _done(second) == {"ingest": [2], "pseudolabel": [2], "tokenize.crops": [2], "tokenize": [2]}
    assert {u["status"] for u in second["units"] if u["shard"] != 2} == {"cached"}  # incl. the tokenizer
    assert store.read_manifest("cc12m", "tokenizers/edge_diffusion-tiny", None) == tokenizer  # not retrained
    assert store.read_manifest("cc12m", EDGE_TOKENS, 1) == old_tokens  # not re-tokenized
    assert store.committed_shards("cc12m", EDGE_TOKENS) == [0, 1, 2]
    assert store.committed_shards("cc12m", "tokens/caption") == [0, 1, 2]
