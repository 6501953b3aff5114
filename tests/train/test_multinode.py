"""``pretrain/demo`` as a multi-node job: two torchrun "nodes" (``--nnodes 2 --nproc-per-node 1``) meeting at a
c10d rendezvous on loopback, each launched with the command the pretrain flow builds, give the same weights
and losses as one process with the same global batch (gloo, CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from fourm_core import ArtifactStore
from tests.servers import free_port
from train_stage.synthetic import make_token_shards
from train_stage.trainer import Dist, Trainer, checkpoint_artifact

from .test_pretrain import DEMO_MODS, synth_cfg
from .torchrun_job import finish, launch


@pytest.mark.slow
def test_two_node_demo_pretrain_matches_one_process_with_the_same_global_batch(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    make_token_shards(store, "synth", DEMO_MODS, n_shards=2, shard_size=16)
    # the demo preset (its eight modalities, half its width to stay quick); 2 nodes x batch 8 == 1 x 8 x 2 accum
    small = {"model.overrides": {"dim": 32, "num_heads": 2}, "steps": 3}
    cfg = synth_cfg(run_name="demo-2nodes", **small)
    rdzv = ["--nnodes=2", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}",
            "--rdzv-id=demo-2nodes", "--local-addr=127.0.0.1"]
    nodes = [launch(cfg, store.root_uri, tmp_path, rdzv, nproc_per_node=1, tag=f"node{i}") for i in range(2)]
    outs = [finish(node, tmp_path, f"node{i}") for i, node in enumerate(nodes)]
    assert any('"checkpoint"' in out for out in outs)

    single = Trainer(synth_cfg(run_name="single", grad_accum=2, **small), store, dist_info=Dist())
    single.fit()
    art = checkpoint_artifact(cfg, cfg.steps)
    manifest = store.read_manifest(cfg.namespace, art, None)
    assert manifest.stats["world_size"] == 2
    got = load_file(store.data_path(cfg.namespace, art, None, ".safetensors"))
    for k, v in single.model.state_dict().items():
        assert torch.allclose(got[k], v, atol=2e-5, rtol=1e-4), k
    history = json.loads(store.read_bytes(store.data_path(cfg.namespace, art, None, ".history.json")))
    assert [r["loss"] for r in history] == pytest.approx([r["loss"] for r in single.history], abs=1e-5)
