"""The pretrain flow under Prefect's test harness: trains, records its flow run in the checkpoint, caches,
fails clearly on missing token shards; the CLI and the prefect.yaml deployments.

Synthetic token shards go under dataset ``synth`` (``demo`` is the real demo's, made by the build flow).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fourm_core import ArtifactStore
from pipelines.__main__ import main
from pipelines.pretrain import pretrain
from train_stage.config import load_train_config
from train_stage.synthetic import make_token_shards

REPO = Path(__file__).resolve().parents[2]
DEMO_MODS = list(load_train_config("demo").model.modalities)  # what pretrain/demo trains on
OVERRIDES = {"datasets": [{"name": "synth", "weight": 1.0}], "checkpoint_every": 0, "log_every": 2,
             "model.overrides": {"dim": 32, "num_heads": 2}}


@pytest.fixture
def synth_root(tmp_path):
    root = str(tmp_path / "store")
    make_token_shards(ArtifactStore(root), "synth", DEMO_MODS, n_shards=2, shard_size=8)
    return root


def test_pretrain_flow_trains_then_is_cached(prefect_api, synth_root, tmp_path, capsys):
    state = pretrain(config="demo", store_root=synth_root, overrides=OVERRIDES, steps=4,
                     log_dir=str(tmp_path / "logs"), return_state=True)
    assert state.is_completed()
    first = state.result()
    assert first["status"] == "done" and first["steps"] == 4 and first["artifact"] == "checkpoints/demo/step-00000004"
    store = ArtifactStore(synth_root)
    m = store.read_manifest("training", first["artifact"], None)
    assert m.flow_run_id == str(state.state_details.flow_run_id)  # the checkpoint knows the flow run
    assert first["manifest"].endswith("manifest.json") and Path(first["manifest"]).exists()
    assert {i.dataset for i in m.ingredients.inputs} == {"synth"} and first["inputs"] == 2 * len(DEMO_MODS)  # 2 shards per modality
    assert Path(first["loss_png"]).stat().st_size > 0

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        assert any(a.key == "pretrain-demo" for a in client.read_latest_artifacts())

    # the CLI runs the same flow: cached now, and it says where everything is
    capsys.readouterr()
    sets = [a for k, v in OVERRIDES.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    assert main(["pretrain", "demo", "--root", synth_root, "--steps", "4", "--log-dir", str(tmp_path / "logs"),
                 *sets]) == 0
    out = capsys.readouterr().out
    assert "checkpoints/demo/step-00000004: cached (4 steps" in out and "loss curve:" in out and "lineage:" in out
    assert store.read_manifest("training", first["artifact"], None).digest == m.digest


def test_pretrain_cli_names_missing_token_shards(tmp_path, capsys):
    root = str(tmp_path / "store")
    make_token_shards(ArtifactStore(root), "synth", ["caption"], n_shards=1, shard_size=4)
    rc = main(["pretrain", "demo", "--root", root, "--set", "datasets=" + json.dumps(OVERRIDES["datasets"])])
    err = capsys.readouterr().err
    assert rc == 2 and "tokens/tok_depth-224" in err and "python -m pipelines" in err
    assert main(["pretrain", "no-such-preset", "--root", root]) == 2


def test_pretrain_deployments_in_prefect_yaml():
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deps = {(d["entrypoint"], d["name"]): d for d in spec["deployments"]}
    demo = deps[("pipelines/pretrain.py:pretrain", "demo")]
    big = deps[("pipelines/pretrain.py:pretrain", "4m-21-b")]
    assert demo["parameters"]["config"] == "demo" and big["parameters"]["config"] == "4m21_b"
    assert big["parameters"]["nproc_per_node"] == 8 and demo["parameters"]["nproc_per_node"] is None
    assert demo["work_pool"]["name"] == big["work_pool"]["name"] == "fourm-gpu"
    flow = load_flow_from_entrypoint(str(REPO / "pipelines/pretrain.py") + ":pretrain")
    assert flow.name == "pretrain"
    # every deployment parameter is a flow parameter
    import inspect

    names = set(inspect.signature(flow.fn).parameters)
    for d in (demo, big):
        assert set(d["parameters"]) <= names, set(d["parameters"]) - names
    from train_stage.config import load_train_config

    load_train_config(big["parameters"]["config"])


@pytest.mark.slow
def test_pretrain_flow_launches_torchrun_with_nproc_per_node(prefect_api, synth_root, tmp_path, monkeypatch):
    """The cluster deployment's path (pretrain/4m-21-b sets nproc_per_node): the task launches torchrun, the
    ranks train with DDP (gloo on CPU) and commit one checkpoint that records the flow run and the world size."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    state = pretrain(config="demo", store_root=synth_root, overrides=OVERRIDES, steps=2, nproc_per_node=2,
                     log_dir=str(tmp_path / "logs"), return_state=True)
    assert state.is_completed(), state
    result = state.result()
    assert result["status"] == "done" and result["steps"] == 2
    m = ArtifactStore(synth_root).read_manifest("training", "checkpoints/demo/step-00000002", None)
    assert m.stats["world_size"] == 2 and m.flow_run_id == str(state.state_details.flow_run_id)
    # a second launch finds the committed checkpoint by its cache key and does not train again
    again = pretrain(config="demo", store_root=synth_root, overrides=OVERRIDES, steps=2, nproc_per_node=2,
                     log_dir=str(tmp_path / "logs"))
    assert again["cache_key"] == m.cache_key
    assert ArtifactStore(synth_root).read_manifest("training", "checkpoints/demo/step-00000002", None).digest == m.digest
