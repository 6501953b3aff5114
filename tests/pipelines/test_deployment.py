"""The ops path end to end on the cluster in a box (tests/pipelines/cluster.py): a real ``prefect server``,
the ``fourm-cpu`` and ``fourm-gpu`` pools, ``prefect deploy --all`` from a clone, one process worker per pool
in its own empty folder (the code arrives through the ``git_clone`` pull step), ``prefect deployment run``,
a schedule that fires, the build -> pretrain -> evaluate chain, and finetune/demo (fine-tune, then evaluate
against the starting checkpoint).

The build-dataset runs use the test-only fake stages (``dataset`` points at their config). To run the real
demo instead, drop that parameter (the deployment's own ``dataset: demo`` applies).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from fourm_core import ArtifactStore
from tests.conftest import TINY_EVAL_OVERRIDES
from tests.eval.tiny_store import MODALITIES as TINY_MODALITIES
from tests.eval.tiny_store import build as build_tiny_store
from tests.eval.tiny_store import torch_threads
from tests.pipelines.cluster import REPO, api, start_cluster
from tests.pipelines.fake_stage import CONFIG_YAML, REGISTRATION

DEPLOYMENTS = {("build_dataset", n): "fourm-cpu" for n in ("cc12m", "coyo700m", "c4", "demo", "demo-heldout")} | \
    {("pretrain", "demo"): "fourm-gpu", ("pretrain", "4m-21-b"): "fourm-gpu", ("finetune", "demo"): "fourm-gpu",
     ("evaluate", "demo"): "fourm-gpu",
     ("evaluate", "4m-21-b"): "fourm-gpu", ("chain", "demo"): "fourm-cpu", ("chain", "4m-21-b"): "fourm-cpu"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(prefect_server, tmp_path_factory):
    c = start_cluster(prefect_server, tmp_path_factory.mktemp("cluster"), {"FOURM_EXTRA_STAGES": REGISTRATION})
    yield c
    c.stop()


@pytest.fixture
def fk_config(tmp_path):
    config = tmp_path / "fk.yaml"
    config.write_text(CONFIG_YAML.format(name="fk"))
    return config


def _deployments(cluster) -> dict[tuple[str, str], dict]:
    found = api(cluster.server.api_url, "deployments/filter", {})
    return {(d["entrypoint"].rsplit(":", 1)[1], d["name"]): d for d in found}


def _store(root) -> ArtifactStore:
    return ArtifactStore(str(root))


def test_deploy_puts_gpu_deployments_on_the_gpu_pool_and_pulls_the_commit(cluster):
    by_entry = _deployments(cluster)
    assert {k: d["work_pool_name"] for k, d in by_entry.items()} == DEPLOYMENTS
    for name in ("build-dataset/cc12m", "pretrain/4m-21-b", "evaluate/demo", "chain/demo"):
        assert name in cluster.deploy_output, cluster.deploy_output
    for d in by_entry.values():  # every deployment clones the deployed commit; nothing names a local path
        [step] = d["pull_steps"]
        clone = step["prefect.deployments.steps.git_clone"]
        assert clone == {"repository": str(cluster.workdir / "fourm.git"), "commit_sha": cluster.commit}
    assert by_entry[("pretrain", "4m-21-b")]["parameters"]["nproc_per_node"] == 8
    assert by_entry[("chain", "4m-21-b")]["parameters"]["build"] == "build-dataset/cc12m"
    [nightly] = by_entry[("build_dataset", "cc12m")]["schedules"]
    assert nightly["schedule"]["cron"] == "0 2 * * *" and nightly["active"] is False  # ops switch it on
    assert by_entry[("build_dataset", "cc12m")]["parameters"]["dataset"] == "cc12m"


def test_build_dataset_run_and_rerun_on_a_worker_in_its_own_folder(cluster, tmp_path, fk_config):
    store_root = tmp_path / "store"
    demo_params = {"dataset": str(fk_config), "store_root": str(store_root), "ray_address": "off"}
    flow_run_id = cluster.run("build-dataset/demo", demo_params)
    first_manifest = _store(store_root).read_manifest("fk", "numbers", 0)
    # the ops re-run of one shard, as deployment parameters (-p values are JSON)
    rerun_id = cluster.run("build-dataset/demo", {**demo_params, "stages": ["fake"], "shards": [1], "force": True})

    assert api(cluster.server.api_url, f"flow_runs/{flow_run_id}")["work_pool_name"] == "fourm-cpu"
    assert "Executing deployment step: git_clone" in cluster.log("fourm-cpu")
    store = _store(store_root)
    assert store.committed_shards("fk", "numbers") == [0, 1, 2]
    assert store.committed_shards("fk", "doubled") == [0, 1, 2]
    assert store.read_manifest("fk", "numbers", 0) == first_manifest  # untouched by the re-run
    assert first_manifest.flow_run_id == flow_run_id
    # the code that ran is the clone of the deployed commit, not this checkout
    assert first_manifest.ingredients.git_commit == cluster.commit
    assert store.read_manifest("fk", "numbers", 1).flow_run_id == rerun_id
    record = store.latest_run_record("fk")
    assert [(u["shard"], u["status"]) for u in record["units"]] == [(1, "done")] and record["force"] is True
    status = subprocess.run([sys.executable, "-m", "pipelines", "status", "fk", "--root", str(store_root)],
                            cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**cluster.env, "PYTHONPATH": str(REPO)})
    assert status.returncode == 0, status.stderr
    assert "6 done, 0 cached, 0 failed, 0 missing" in status.stdout and "shards [1], forced" in status.stdout


def test_a_schedule_fires_and_a_worker_runs_it(cluster, tmp_path, fk_config):
    """A short interval schedule on build-dataset/cc12m (the nightly's deployment) with parameters of its own:
    the server's scheduler creates the run (no person starts it) and the fourm-cpu worker completes it."""
    url = cluster.server.api_url
    deployment = _deployments(cluster)[("build_dataset", "cc12m")]
    store_root = tmp_path / "store"
    # The scheduler plans runs from the moment its loop runs (every 2 s here), never before it: an anchor that
    # has passed by then is skipped for the next one an hour later. 20 s is the margin for a loaded 2-core box
    # (with 3 s, one CI run's scheduler came late and the run waited an hour away, SCHEDULED).
    anchor = datetime.now(timezone.utc) + timedelta(seconds=20)
    # one run only: the next one would be an hour later, after the session
    api(url, f"deployments/{deployment['id']}/schedules", [{
        "schedule": {"interval": 3600, "anchor_date": anchor.isoformat()}, "active": True, "max_scheduled_runs": 1,
        "parameters": {"dataset": str(fk_config), "store_root": str(store_root), "ray_address": "off"}}])
    deadline, runs = time.monotonic() + 120, []
    while time.monotonic() < deadline and not runs:
        runs = [r for r in api(url, "flow_runs/filter", {"deployments": {"id": {"any_": [deployment["id"]]}}})
                if r["auto_scheduled"]]
        time.sleep(1)
    assert runs, "the scheduler created no run:\n" + cluster.server_log()[-4000:]
    first = min(runs, key=lambda r: r["expected_start_time"])
    planned = datetime.fromisoformat(first["expected_start_time"])
    assert abs(planned - anchor) < timedelta(seconds=1), \
        f"the scheduler planned the run for {planned}, not the anchor {anchor}: its first pass came after the anchor"
    assert cluster.wait(first["id"], 180) == "COMPLETED", cluster.log("fourm-cpu")[-4000:]
    assert _store(store_root).read_manifest("fk", "doubled", 2).flow_run_id == first["id"]


def test_chain_runs_build_then_pretrain_then_evaluate(cluster, tmp_path, fk_config, tiny_eval_store):
    """chain/demo at tiny size on one store: build-dataset/demo (fourm-cpu), then pretrain/demo and evaluate/demo
    on the fourm-gpu worker, each its own flow run running the cloned commit; evaluate gets the checkpoint
    pretrain committed."""
    eval_store, _ = tiny_eval_store
    root = tmp_path / "store"
    shutil.copytree(eval_store.root, root)  # a store with token shards and tokenizers to train and evaluate on
    train = {"run_name": "chain", "datasets": [{"name": "ev", "weight": 1.0}], "model.modalities": TINY_MODALITIES,
             "model.overrides": {"dim": 32, "num_heads": 2}, "batch_size": 4, "dtype": "fp32", "checkpoint_every": 0,
             "log_every": 1}
    params = {"store_root": str(root),
              "build_parameters": {"dataset": str(fk_config), "ray_address": "off"},
              "pretrain_parameters": {"overrides": train, "steps": 2, "log_dir": str(tmp_path / "runs")},
              "evaluate_parameters": {"overrides": {k: v for k, v in TINY_EVAL_OVERRIDES.items()
                                                    if not k.startswith("checkpoint.")}}}
    chain_id = cluster.run("chain/demo", params, timeout=400)
    store = _store(root)
    built = store.read_manifest("fk", "doubled", 0)
    ckpt = store.read_manifest("training", "checkpoints/chain/step-00000002", None)
    evaluation = store.read_manifest("ev", "evaluations/chain/step-00000002", None)
    assert built is not None and ckpt is not None and evaluation is not None
    runs = {i: api(cluster.server.api_url, f"flow_runs/{i}") for i in (built.flow_run_id, ckpt.flow_run_id,
                                                                       evaluation.flow_run_id)}
    assert [r["work_pool_name"] for r in runs.values()] == ["fourm-cpu", "fourm-gpu", "fourm-gpu"]
    assert len(runs) == 3 and chain_id not in runs  # three flow runs of their own
    assert {r["parent_task_run_id"] is not None for r in runs.values()} == {True}  # started by the chain
    assert "Executing deployment step: git_clone" in cluster.log("fourm-gpu")
    assert ckpt.ingredients.git_commit == evaluation.ingredients.git_commit == cluster.commit
    assert {i.dataset for i in ckpt.ingredients.inputs} == {"ev"} and (tmp_path / "runs" / "loss.png").exists()
    evaluated = [(i.dataset, i.artifact, i.digest) for i in evaluation.ingredients.inputs] + \
        [(m.id, m.source, m.digest) for m in [evaluation.ingredients.model] if m is not None]
    assert any(ckpt.digest in entry for entry in evaluated), evaluated  # the checkpoint pretrain just committed


RGB_DEPTH = ["tok_rgb@224", "tok_depth@224"]


@pytest.fixture(scope="module")
def rgb_depth_store(tmp_path_factory):
    """tests/eval/tiny_store.py at its smallest with RGB and depth tokens: 8 scenes in dataset ``ft``, 4 held-out
    scenes of another seed in ``ft-heldout`` (same tokenizers) and a 4-step tiny 4M checkpoint ``start``."""
    root = tmp_path_factory.mktemp("ft-store")
    with torch_threads(1):
        store, start = build_tiny_store(str(root / "store"), dataset="ft", n_samples=8, shard_size=4, size=64,
                                        tokenizer_steps=0, train_steps=4, batch_size=4, dim=32, run="start",
                                        workdir=root, heldout=4, modalities=RGB_DEPTH)
    return store, start


def test_finetune_deployment_beats_the_checkpoint_it_started_from(cluster, tmp_path, rgb_depth_store):
    """finetune/demo on the fourm-gpu worker: the finetune_demo preset (transfer masking RGB -> depth) started from
    the store's ``start`` checkpoint, then the flow's own evaluation of both checkpoints on held-out scenes: the
    fine-tuned model's RGB -> depth token loss is below the starting checkpoint's."""
    src, start = rgb_depth_store
    root = tmp_path / "store"
    shutil.copytree(src.root, root)
    train = {"init_from": {"run": "start"}, "datasets": [{"name": "ft", "weight": 1.0, "modalities": RGB_DEPTH}],
             "checkpoint_every": 0, "batch_size": 4, "warmup_tokens": 0, "log_every": 4, "blr": 0.3}
    evaluation = {"dataset": "ft-heldout", "tokenizer_dataset": "ft", "max_samples": 4, "batch_size": 4,
                  "decode_steps": 1, "generation.steps": 2, "loss_repeats": 2, "grid_samples": 2}
    t0 = time.monotonic()
    run_id = cluster.run("finetune/demo", {"store_root": str(root), "overrides": train, "steps": 12,
                                           "log_dir": str(tmp_path / "runs"), "evaluation_overrides": evaluation},
                         timeout=600)
    print(f"\nfinetune/demo: {time.monotonic() - t0:.1f} s from `deployment run` to COMPLETED")
    run = api(cluster.server.api_url, f"flow_runs/{run_id}")
    assert run["work_pool_name"] == "fourm-gpu"
    store = _store(root)
    tuned = store.read_manifest("training", "checkpoints/finetune-demo/step-00000012", None)
    assert tuned.flow_run_id == run_id and tuned.ingredients.git_commit == cluster.commit
    start = store.read_manifest("training", start.artifact, None)  # the copy's manifest (same digest)
    assert start.as_input() in tuned.ingredients.inputs  # lineage: the checkpoint it started from
    # both evaluations are committed units beside each other, not over evaluate/demo's
    ns = "ft-heldout-finetune-demo-comparison"
    evals = {m.ingredients.model.source: m for m in (store.read_manifest(ns, f"evaluations/{r}", None)
                                                     for r in ("finetune-demo/step-00000012", "start/step-00000004"))}
    assert set(evals) == {tuned.uri, start.uri}
    rows: dict[tuple, dict] = {}
    for source, m in evals.items():
        for r in store.read_table(m.dataset, m.artifact, None).to_pylist():
            rows.setdefault((r["task"], r["target"], r["reference"], r["metric"]), {})[source] = r["model"]
    [loss_key] = [k for k in rows if k[0] == "masked tokens" and k[1] == "tok_depth@224" and k[3] == "loss"]
    assert "rgb2depth" in loss_key[2]  # held-out tokens masked like the fine-tuning: RGB in, depth out
    before, after = rows[loss_key][start.uri], rows[loss_key][tuned.uri]
    print(f"held-out RGB -> depth token loss: pre-trained {before:.3f}, fine-tuned {after:.3f}")
    for k, v in sorted(rows.items()):
        print(" ", " | ".join(k), f"fine-tuned {v.get(tuned.uri)}, pre-trained {v.get(start.uri)}")
    assert after < before - 0.3, (before, after)
