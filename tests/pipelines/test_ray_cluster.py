"""build-dataset on the cluster in a box, started the way ops start it: a real two-node Ray cluster (``ray start
--head`` + ``ray start --address`` on this host, a custom resource per node, token authentication on), a real
Prefect server, and a ``fourm-cpu`` process worker in its own empty folder whose environment names the cluster
(``FOURM_RAY_ADDRESS`` and the token); the flow's code arrives through the deployment's ``git_clone`` pull step.

``prefect deployment run build-dataset/demo`` runs ingest, pseudolabel (the Ray runner: decode tasks, labeler actor pools) and tokenize, and
Ray's state API says which nodes ran what: shard tasks of both heavy stages on both nodes, and every node the
pseudolabel work reports (a test labeler records ``get_node_id()`` per sample, whatever the runner schedules:
tasks or actors) is a node of this cluster, both of them. Then the ops re-run of one pseudolabel shard
(``-p stages=["pseudolabel"] -p shards=[1] -p force=true``, ingest cached) joins the same cluster: its driver is
a new job of this cluster, its labels were made on this cluster's nodes, and no local Ray was started.

The dataset is small on purpose (two shards of four scenes, model-free labelers, caption tokens) and is passed
as the deployment's ``dataset`` parameter: the demo preset's ``runner: local`` is for a laptop, a cluster runs
``runner: ray``.
"""

from __future__ import annotations

import json
import time

import pytest
import yaml

from fourm_core import ArtifactStore
from fourm_core.ray_address import AUTH_ENV
from tests.pipelines.cluster import api, flow_run_logs, start_cluster
from tests.ray_cluster import start_ray_cluster

NODE_LABELER = "tests.pseudolabel.plugins:RayNodeLabeler"
# Two shards; the node labeler takes one sample per batch and holds its CPU for a while, so that the batches of
# both shards overlap and Ray has to place them on both nodes (concurrency 2: a pool of two where the runner
# keeps labelers in actors, one per node).
TINY = {"name": "rc", "sources": [{"kind": "synthetic", "n_samples": 8, "seed": 0, "size": 64}],
        "ingest": {"shard_size": 4, "shorter_side": 64}, "stages": ["ingest", "pseudolabel", "tokenize"],
        "pseudolabel": {"profile": "tiny", "runner": "ray", "labelers": ["canny", "ray_node"],
                        "plugins": [NODE_LABELER], "settings": {"ray_node": {"sleep_s": 1.0, "concurrency": 2}}},
        "tokenize": {"profile": "tiny"}}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    c = start_ray_cluster(tmp_path_factory.mktemp("ray-cluster"), [1, 1])
    yield c
    c.stop()


@pytest.fixture(scope="module")
def prefect_cluster(prefect_server, ray_cluster, tmp_path_factory):
    # The worker's environment is the cluster's contract: where the head is and the token (docs/operations.md).
    # No PYTHONPATH: the flow runs the cloned commit (the Ray nodes run their own environment, here this tree).
    env = {k: ray_cluster.env[k] for k in AUTH_ENV if k in ray_cluster.env}
    env.update(FOURM_RAY_ADDRESS=ray_cluster.address, FOURM_EXTRA_STAGES="")
    c = start_cluster(prefect_server, tmp_path_factory.mktemp("prefect-cluster"), env, pools=("fourm-cpu",))
    yield c
    c.stop()


def _nodes_of(tasks: list[dict], match) -> set[str]:
    return {t["node_id"] for t in tasks if match(t["name"]) and t["state"] == "FINISHED" and t["node_id"]}


def _label_nodes(store: ArtifactStore, shard: int) -> list[str]:
    return store.read_table("rc", "labels/ray_node", shard).column("node_id").to_pylist()


def _timing(cluster, flow_run_id: str) -> str:
    from datetime import datetime

    r = api(cluster.server.api_url, f"flow_runs/{flow_run_id}")
    t = {k: datetime.fromisoformat(r[k]) for k in ("created", "start_time", "end_time")}
    return (f"{(t['start_time'] - t['created']).total_seconds():.1f} s from `deployment run` to running, "
            f"{(t['end_time'] - t['start_time']).total_seconds():.1f} s running")


def test_deployment_run_uses_both_ray_nodes_and_a_one_shard_rerun_joins_the_cluster(ray_cluster, prefect_cluster,
                                                                                    tmp_path):
    config = tmp_path / "rc.yaml"
    config.write_text(yaml.safe_dump(TINY))
    root = tmp_path / "store"
    params = {"dataset": str(config), "store_root": str(root)}
    url = prefect_cluster.server.api_url
    joined = f"Ray: the Ray cluster at {ray_cluster.address} (from FOURM_RAY_ADDRESS)"

    t0 = time.monotonic()
    run_id = prefect_cluster.run("build-dataset/demo", params, timeout=900)
    print(f"\nbuild-dataset/demo on 2 Ray nodes: {time.monotonic() - t0:.1f} s; {_timing(prefect_cluster, run_id)}")
    logs = flow_run_logs(url, run_id, until="units done")
    # units: 2 ingest, 2 shards x 2 labelers, 2 tokenize
    assert joined in logs and "build-dataset rc: 8 units done, 0 cached" in logs, logs[-3000:]
    store = ArtifactStore(str(root))
    images = store.read_manifest("rc", "images", 0)
    assert images.flow_run_id == run_id and images.ingredients.git_commit == prefect_cluster.commit  # the clone ran

    state = ray_cluster.state()
    nodes = {n["node_id"] for n in state["nodes"] if n["state"] == "ALIVE"}
    assert len(nodes) == 2
    [job] = [j["job_id"] for j in state["jobs"]]  # the flow run's driver is this cluster's one job so far
    tasks = [t for t in state["tasks"] if t["job_id"] == job]
    # heavy stages: one Ray task per shard, named <stage>/shard-NNNNN; two shards, one per node
    assert _nodes_of(tasks, lambda n: n.startswith("ingest/shard-")) == nodes
    assert _nodes_of(tasks, lambda n: n.startswith("tokenize/shard-")) == nodes
    assert store.committed_shards("rc", "tokens/caption") == [0, 1]
    # pseudolabel: the work itself says where it ran, and that is both nodes of this cluster
    labelled_on = _label_nodes(store, 0) + _label_nodes(store, 1)
    assert len(labelled_on) == 8 and set(labelled_on) == nodes, (labelled_on, nodes)

    # the README's re-run of one pseudolabel shard, ingest cached: deployment parameters, as ops give them
    before = store.read_manifest("rc", "labels/canny_edge", 1)
    rerun_id = prefect_cluster.run("build-dataset/demo", {**params, "stages": ["pseudolabel"], "shards": [1],
                                                          "force": True}, timeout=600)
    print(f"one-shard pseudolabel re-run: {_timing(prefect_cluster, rerun_id)}")
    rerun_logs = flow_run_logs(url, rerun_id, until="units done")
    assert joined in rerun_logs and "build-dataset rc: 2 units done, 0 cached" in rerun_logs, rerun_logs[-3000:]
    assert store.read_manifest("rc", "labels/canny_edge", 1).flow_run_id == rerun_id != before.flow_run_id
    assert store.read_manifest("rc", "labels/canny_edge", 0).flow_run_id == run_id  # the other shard untouched
    state = ray_cluster.state()
    new_jobs = {j["job_id"] for j in state["jobs"]} - {job}
    assert len(new_jobs) == 1, json.dumps(state["jobs"], indent=1)  # the re-run's driver joined this cluster ...
    rerun_tasks = [t for t in state["tasks"] if t["job_id"] in new_jobs]
    assert any(t["state"] == "FINISHED" for t in rerun_tasks)  # ... and its work ran there,
    assert not _nodes_of(rerun_tasks, lambda n: n.startswith(("ingest/", "tokenize/")))  # pseudolabel only
    assert set(_label_nodes(store, 1)) <= nodes  # labelled on this cluster's nodes: no local Ray (its own node id)
    assert "Started a local Ray instance" not in prefect_cluster.log("fourm-cpu")
