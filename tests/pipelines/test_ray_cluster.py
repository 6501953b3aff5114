"""build-dataset on a real two-node Ray cluster (``ray start --head`` + ``ray start --address`` on this host,
token authentication on), joined through FOURM_RAY_ADDRESS: every stage's work lands on both nodes (Ray's
state API says where each task ran), and a one-shard pseudolabel re-run with ingest cached uses the same
cluster instead of starting a local Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fourm_core import ArtifactStore
from tests.ray_cluster import start_ray_cluster

REPO = Path(__file__).resolve().parents[2]

# Small on purpose: two shards (one per node), a model-free labeler on the Ray Data runner, caption tokens.
TINY = {"name": "rc", "sources": [{"kind": "synthetic", "n_samples": 8, "seed": 0, "size": 64}],
        "ingest": {"shard_size": 4, "shorter_side": 64}, "stages": ["ingest", "pseudolabel", "tokenize"],
        "pseudolabel": {"profile": "tiny", "runner": "ray", "labelers": ["canny"]},
        "tokenize": {"profile": "tiny"}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_ray_cluster(tmp_path_factory.mktemp("ray-cluster"), [1, 1])
    yield c
    c.stop()


def _cli(cluster, *args: str) -> str:
    # The flow runs in its own process, as on a Prefect worker: its environment names the cluster and the token.
    env = dict(cluster.env, FOURM_RAY_ADDRESS=cluster.address, FOURM_EXTRA_STAGES="")
    res = subprocess.run([sys.executable, "-m", "pipelines", *args], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-5000:]
    return out


def _nodes_of(tasks: list[dict], match) -> set[str]:
    return {t["node_id"] for t in tasks if match(t["name"]) and t["state"] == "FINISHED" and t["node_id"]}


@pytest.mark.slow
def test_build_dataset_runs_on_both_nodes_and_a_pseudolabel_rerun_joins_the_cluster(cluster, tmp_path):
    config = tmp_path / "rc.yaml"
    config.write_text(yaml.safe_dump(TINY))
    root = tmp_path / "store"

    out = _cli(cluster, "run", "--dataset", str(config), "--root", str(root))
    assert f"Ray: the Ray cluster at {cluster.address} (from FOURM_RAY_ADDRESS)" in out
    assert "6 units done, 0 cached" in out, out[-3000:]
    state = cluster.state()
    nodes = {n["node_id"] for n in state["nodes"] if n["state"] == "ALIVE"}
    assert len(nodes) == 2
    tasks = state["tasks"]
    # shard tasks of heavy stages are named <stage>/shard-NNNNN; pseudolabel's tasks as pseudolabel/<step>
    assert _nodes_of(tasks, lambda n: n.startswith("ingest/shard-")) == nodes
    assert _nodes_of(tasks, lambda n: n.startswith("tokenize/shard-")) == nodes
    assert _nodes_of(tasks, lambda n: n == "pseudolabel/decode") == nodes
    jobs_before = {j["job_id"] for j in state["jobs"]}

    store = ArtifactStore(str(root))
    before = store.read_manifest("rc", "labels/canny_edge", 1)
    rerun = _cli(cluster, "rerun", "--dataset", str(config), "--stage", "pseudolabel", "--shard", "1",
                 "--root", str(root))
    assert f"Ray: the Ray cluster at {cluster.address} (from FOURM_RAY_ADDRESS)" in rerun
    after = store.read_manifest("rc", "labels/canny_edge", 1)
    assert after.flow_run_id != before.flow_run_id  # the unit was redone by the re-run
    state = cluster.state()
    new_jobs = {j["job_id"] for j in state["jobs"]} - jobs_before
    assert len(new_jobs) == 1, state["jobs"]  # the re-run's driver joined this cluster ...
    rerun_tasks = [t for t in state["tasks"] if t["job_id"] in new_jobs]
    assert _nodes_of(rerun_tasks, lambda n: n == "pseudolabel/decode")  # ... and labelled on it
    assert not _nodes_of(rerun_tasks, lambda n: n.startswith(("ingest/", "tokenize/")))
