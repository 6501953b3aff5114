"""The ops path end to end: a real ``prefect server`` (SQLite, loopback), the process work pool,
``prefect deploy --all`` from prefect.yaml, a worker, and ``prefect deployment run build-dataset/demo``.

The demo deployment runs the test-only fake stages here (``DEMO_PARAMS['dataset']`` points at their
config). To run the real demo instead, drop that key (the deployment's own ``dataset: demo`` applies).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import TINY_EVAL_OVERRIDES
from tests.pipelines.fake_stage import CONFIG_YAML, REGISTRATION
from tests.servers import BIN, kill, start, start_prefect_server
from train_stage.config import load_train_config
from train_stage.synthetic import make_token_shards

DEMO_MODS = list(load_train_config("demo").model.modalities)  # what pretrain/demo trains on

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _prefect(env: dict, *args: str, timeout: float = 180) -> str:
    res = subprocess.run([str(BIN / "prefect"), *args], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, f"prefect {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def _api(api: str, path: str, body: dict | None = None):
    """GET (or POST ``body``) the Prefect REST API; the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{api}/{path}", data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def _flow_run_state(api: str, flow_run_id: str) -> str:
    return _api(api, f"flow_runs/{flow_run_id}")["state"]["type"]


def _store(root: Path):
    from fourm_core import ArtifactStore

    return ArtifactStore(str(root))


def _run_deployment(env: dict, api: str, params: dict, tmp_path: Path, name: str = "build-dataset/demo") -> str:
    """``prefect deployment run <name>`` with ``params``; wait until the run COMPLETES; its id."""
    args = [a for k, v in params.items() for a in ("--param", f"{k}={v}")]
    out = _prefect(env, "deployment", "run", name, *args)
    flow_run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)
    deadline, state = time.monotonic() + 300, None
    while time.monotonic() < deadline:
        state = _flow_run_state(api, flow_run_id)
        if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        time.sleep(2)
    assert state == "COMPLETED", f"flow run ended {state}:\n{(tmp_path / 'worker.log').read_text()[-5000:]}"
    return flow_run_id


@pytest.mark.timeout(900)  # five deployment runs through one worker; on the shared 2-core box ~10 min
def test_deployment_run_on_a_real_server_and_worker(tmp_path, tiny_eval_store):
    config = tmp_path / "fk.yaml"
    config.write_text(CONFIG_YAML.format(name="fk"))
    store_root = tmp_path / "store"
    server = start_prefect_server(tmp_path, {"PYTHONPATH": str(REPO), "FOURM_EXTRA_STAGES": REGISTRATION,
                                             "OMP_NUM_THREADS": "1", "PREFECT_WORKER_QUERY_SECONDS": "2"})
    worker = None
    try:
        env = server.env
        _prefect(env, "work-pool", "create", "fourm-process", "--type", "process")
        # the worker starts (seconds of imports) while the deployments are made
        worker = start([str(BIN / "prefect"), "worker", "start", "--pool", "fourm-process"],
                       tmp_path / "worker.log", env=env, cwd=str(tmp_path))
        out = _prefect(env, "--no-prompt", "deploy", "--all")
        for name in ("build-dataset/cc12m", "build-dataset/coyo700m", "build-dataset/c4", "build-dataset/demo",
                     "pretrain/demo", "pretrain/4m-21-b", "finetune/demo", "evaluate/demo", "evaluate/4m-21-b"):
            assert name in out, out
        found = _api(server.api_url, "deployments/filter", {})
        by_entry = {(d["entrypoint"].rsplit(":", 1)[1], d["name"]): d for d in found}
        assert set(by_entry) == {("build_dataset", n) for n in ("cc12m", "coyo700m", "c4", "demo")} | \
            {("pretrain", "demo"), ("pretrain", "4m-21-b"), ("finetune", "demo"), ("evaluate", "demo"),
             ("evaluate", "4m-21-b")}
        assert {d["work_pool_name"] for d in found} == {"fourm-process"}
        deployments = {n: d for (f, n), d in by_entry.items() if f == "build_dataset"}
        assert by_entry[("pretrain", "4m-21-b")]["parameters"]["nproc_per_node"] == 8
        assert by_entry[("evaluate", "demo")]["parameters"]["config"] == "demo"
        [nightly] = deployments["cc12m"]["schedules"]
        assert nightly["schedule"]["cron"] == "0 2 * * *" and nightly["active"] is False  # ops switch it on
        assert deployments["cc12m"]["parameters"]["dataset"] == "cc12m"
        demo_params = {"dataset": str(config), "store_root": str(store_root), "ray_address": "off"}
        flow_run_id = _run_deployment(env, server.api_url, demo_params, tmp_path)
        first_manifest = _store(store_root).read_manifest("fk", "numbers", 0)
        # the ops re-run of one shard, as deployment parameters (-p values are JSON)
        rerun_id = _run_deployment(env, server.api_url, {**demo_params, "stages": '["fake"]', "shards": "[1]",
                                                         "force": "true"}, tmp_path)
        # pretrain/demo on synthetic token shards of another dataset (the real demo's take minutes to build)
        make_token_shards(_store(store_root), "synth", DEMO_MODS, n_shards=1, shard_size=8)
        overrides = {"datasets": [{"name": "synth", "weight": 1.0}], "model.overrides": {"dim": 32, "num_heads": 2}}
        train_id = _run_deployment(env, server.api_url, {"store_root": str(store_root), "steps": "3",
                                                         "log_dir": str(tmp_path / "runs"),
                                                         "overrides": json.dumps(overrides)},
                                   tmp_path, "pretrain/demo")
        # finetune/demo from that checkpoint, RGB -> depth on the same synthetic shards
        ft = {"datasets": [{"name": "synth", "weight": 1.0, "modalities": ["tok_rgb@224", "tok_depth@224"]}],
              "checkpoint_every": 0, "batch_size": 2}
        ft_id = _run_deployment(env, server.api_url, {"store_root": str(store_root), "steps": "2",
                                                      "log_dir": str(tmp_path / "runs-ft"),
                                                      "overrides": json.dumps(ft)}, tmp_path, "finetune/demo")
        # evaluate/demo on a small real store (its own seed, so the worker computes and commits it)
        eval_store, _ = tiny_eval_store
        eval_params = {"store_root": eval_store.root_uri, "overrides": json.dumps({**TINY_EVAL_OVERRIDES, "seed": 11})}
        eval_run_id = _run_deployment(env, server.api_url, eval_params, tmp_path, name="evaluate/demo")
    finally:
        if worker is not None:
            kill(worker)
        kill(server.proc)

    evaluation = _store(Path(eval_store.root)).read_manifest("ev", "evaluations/tiny/step-00000001", None)
    assert evaluation.flow_run_id == eval_run_id and evaluation.ingredients.config["seed"] == 11
    store = _store(store_root)
    assert store.committed_shards("fk", "numbers") == [0, 1, 2]
    assert store.committed_shards("fk", "doubled") == [0, 1, 2]
    assert store.read_manifest("fk", "numbers", 0) == first_manifest  # untouched by the re-run
    assert first_manifest.flow_run_id == flow_run_id
    assert store.read_manifest("fk", "numbers", 1).flow_run_id == rerun_id
    record = store.latest_run_record("fk")
    assert [(u["shard"], u["status"]) for u in record["units"]] == [(1, "done")] and record["force"] is True
    ckpt = store.read_manifest("training", "checkpoints/demo/step-00000003", None)
    assert ckpt.flow_run_id == train_id and {i.dataset for i in ckpt.ingredients.inputs} == {"synth"}
    assert (tmp_path / "runs" / "loss.png").exists()
    tuned = store.read_manifest("training", "checkpoints/finetune-demo/step-00000002", None)
    assert tuned.flow_run_id == ft_id and ckpt.as_input() in tuned.ingredients.inputs  # started from pretrain/demo
    status = subprocess.run([sys.executable, "-m", "pipelines", "status", "fk", "--root", str(store_root)],
                            cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**server.env, "PYTHONPATH": str(REPO)})
    assert status.returncode == 0, status.stderr
    assert "6 done, 0 cached, 0 failed, 0 missing" in status.stdout and "shards [1], forced" in status.stdout
    assert re.search(r"fake_down\s+doubled\s+00002\s+done\s+4", status.stdout)
