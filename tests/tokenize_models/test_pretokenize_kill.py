"""A real SIGKILL of the tokenize stage mid-run: nothing partial is visible, the re-run finishes every shard
with each (sample, crop) exactly once, and the units committed before the kill are not redone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from fourm_core import ArtifactStore
from fourm_core.modalities import MODALITIES
from tokenize_stage.labels import commit_synthetic_labels
from tokenize_stage.train_tokenizer import TrainTokenizerConfig, train_tokenizer

REPO = Path(__file__).resolve().parents[2]
SEMSEG, GLOBAL = MODALITIES["tok_semseg@224"], MODALITIES["tok_dinov2_global"]
SHARDS, SHARD_SIZE, CROPS = 8, 16, 4


def _pretokenize(config: Path, root: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "tokenize_stage", "pretokenize", "--dataset", str(config),
                             "--store", root], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkill_mid_run_then_rerun(tmp_path):
    root = str(tmp_path / "store")
    store = ArtifactStore(root)
    for name in ("semseg_vqvae", "dinov2_global_memcodes"):
        commit_synthetic_labels(store, "kill", name, n_samples=SHARDS * SHARD_SIZE, shard_size=SHARD_SIZE)
        train_tokenizer(store, "kill", TrainTokenizerConfig(tokenizer=name, steps=2, eval_samples=8))
    config = tmp_path / "kill.yaml"
    config.write_text(yaml.safe_dump({"name": "kill", "sources": [{"kind": "synthetic"}],
                                      "tokenize": {"profile": "tiny", "crops": {"n_crops": CROPS}}}))

    proc = _pretokenize(config, root)
    deadline = time.monotonic() + 120
    while not store.committed_shards("kill", SEMSEG.token_artifact):  # the run is committing units
        assert proc.poll() is None, f"pretokenize ended before the kill: {proc.stdout.read()}"
        assert time.monotonic() < deadline, "no unit committed in time"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    before = {a: store.committed_shards("kill", a) for a in (SEMSEG.token_artifact, GLOBAL.token_artifact)}
    assert len(before[SEMSEG.token_artifact]) < SHARDS, "the kill came after the last shard"
    for artifact, shards in before.items():  # whatever is visible is whole
        for s in shards:
            assert store.read_table("kill", artifact, s).num_rows == SHARD_SIZE * CROPS

    rerun = _pretokenize(config, root)
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out
    statuses = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    cached = {(s["artifacts"][0], s["shard"]) for s in statuses if s["status"] == "cached"}
    assert {(SEMSEG.token_artifact, s) for s in before[SEMSEG.token_artifact]} <= cached  # not redone
    for artifact in (SEMSEG.token_artifact, GLOBAL.token_artifact):
        assert store.committed_shards("kill", artifact) == list(range(SHARDS))
        pairs = [p for s in range(SHARDS) for p in zip(*store.read_table("kill", artifact, s, columns=[
            "sample_key", "crop"]).to_pydict().values())]
        assert len(pairs) == len(set(pairs)) == SHARDS * SHARD_SIZE * CROPS  # each (sample, crop) once
