"""A real SIGKILL of a 2-process torchrun job (DDP and FSDP2), once in the middle of a step and once while a
checkpoint is being written: the re-run resumes from the last complete checkpoint (never the half-written
one), and the final weights and the whole loss history are bit-identical to an uninterrupted run (CPU)."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from fourm_core import ArtifactStore
from train_stage.synthetic import make_token_shards
from train_stage.trainer import PAUSE_DIR_ENV, PAUSE_ENV, checkpoint_artifact, list_checkpoints

from .test_trainer import MODS, make_cfg
from .torchrun_job import finish, kill_job, launch, wait_for


def _store(root) -> ArtifactStore:
    store = ArtifactStore(str(root))
    make_token_shards(store, "synth", MODS, n_shards=2, shard_size=16)
    return store


def _final(store: ArtifactStore, cfg) -> tuple[dict, list[float]]:
    art = checkpoint_artifact(cfg, cfg.steps)
    assert store.read_manifest(cfg.namespace, art, None) is not None
    weights = load_file(store.data_path(cfg.namespace, art, None, ".safetensors"))
    history = json.loads(store.read_bytes(store.data_path(cfg.namespace, art, None, ".history.json")))
    return weights, [r["loss"] for r in history]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_killed_torchrun_job_resumes_from_the_last_complete_checkpoint_bit_identically(tmp_path, mode):
    cfg = make_cfg(run_name=mode, steps=6, checkpoint_every=2, distributed=mode)
    straight_store = _store(tmp_path / "straight")
    finish(launch(cfg, straight_store.root_uri, tmp_path, tag="straight"), tmp_path, "straight")
    want_weights, want_losses = _final(straight_store, cfg)
    assert len(want_losses) == 6

    store = _store(tmp_path / "killed")
    # 1. killed in the middle of step 3 (gradients computed, weights not updated): checkpoint 2 is the last
    pause = {PAUSE_DIR_ENV: str(tmp_path)}
    job = launch(cfg, store.root_uri, tmp_path, env={**pause, PAUSE_ENV: "step:3"}, tag="kill-step")
    markers = [tmp_path / "paused-0", tmp_path / "paused-1"]
    wait_for(markers, job, tmp_path / "kill-step.log")
    kill_job(job)
    assert list_checkpoints(store, cfg) == [2]
    for m in markers:
        m.unlink()

    # 2. the re-run resumes at 2 and is killed while rank 0 writes checkpoint 4 (files written, no manifest)
    job = launch(cfg, store.root_uri, tmp_path, env={**pause, PAUSE_ENV: "checkpoint:4"}, tag="kill-ckpt")
    wait_for(markers[:1], job, tmp_path / "kill-ckpt.log")
    kill_job(job)
    assert "from its checkpoint at step 2" in (tmp_path / "kill-ckpt.log").read_text()
    half = checkpoint_artifact(cfg, 4)
    assert store.exists(store.data_path(cfg.namespace, half, None, ".safetensors"))  # bytes are there ...
    assert store.read_manifest(cfg.namespace, half, None) is None  # ... but not committed
    assert list_checkpoints(store, cfg) == [2]

    # 3. the next re-run must take checkpoint 2, not the half-written 4, and finish the run
    out = finish(launch(cfg, store.root_uri, tmp_path, tag="resume"), tmp_path, "resume")
    assert "from its checkpoint at step 2" in out
    got_weights, got_losses = _final(store, cfg)
    assert got_losses == want_losses  # the whole history, bit for bit (steps 1-2 carried by the checkpoint)
    assert got_weights.keys() == want_weights.keys()
    for k, v in want_weights.items():
        assert got_weights[k].equal(v), k
