"""The Kubernetes work-pool templates (infra/k8s/work-pools): a real Prefect server accepts them with
``prefect work-pool create --type kubernetes --base-job-template``, and the Kubernetes worker's own code
(prefect-kubernetes) renders them, for a flow run of a deployment with job variables, into Jobs that
validate strictly against the Kubernetes schemas."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.error
import urllib.request
import uuid

import pytest

from tests.infra.k8s import K8S, validate_core
from tests.servers import BIN, kill, start_prefect_server

POOLS = {"fourm-cpu": K8S / "work-pools" / "fourm-cpu.json", "fourm-gpu": K8S / "work-pools" / "fourm-gpu.json"}

# prefect-kubernetes requires these two in the pod spec (its manifest check compares against a base manifest
# that has them there); they are not PodSpec fields, and the API server drops them. Nothing else may be extra.
PREFECT_POD_SPEC_QUIRKS = {"completions": 1, "parallelism": 1}

pytestmark = pytest.mark.slow  # one real `prefect server start` (~20 s)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_prefect_server(tmp_path_factory.mktemp("pools"))
    yield srv
    kill(srv.proc)


def _prefect(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "prefect"), *args], env=env, capture_output=True, text=True, timeout=120)


def _render(api_url: str, template: dict, job_variables: dict) -> dict:
    """The Job the Kubernetes worker would create for a flow run with these job variables."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        config = asyncio.run(KubernetesWorkerJobConfiguration.from_template_and_values(template, job_variables))
        config.prepare_for_flow_run(FlowRun(flow_id=uuid.uuid4(), name="brave-otter"))
    return config.job_manifest


def _strict_job(job: dict) -> None:
    spec = job["spec"]["template"]["spec"]
    for key, value in PREFECT_POD_SPEC_QUIRKS.items():
        assert spec.pop(key) == value
    job["metadata"].setdefault("name", job["metadata"]["generateName"] + "x")  # the API server names it
    validate_core(job)


def test_server_accepts_the_pool_templates(server):
    for name, path in POOLS.items():
        res = _prefect(server.env, "work-pool", "create", name, "--type", "kubernetes",
                       "--base-job-template", str(path))
        assert res.returncode == 0, res.stdout + res.stderr
        with urllib.request.urlopen(f"{server.api_url}/work_pools/{name}", timeout=30) as r:
            pool = json.load(r)
        assert pool["type"] == "kubernetes"
        assert pool["base_job_template"] == json.loads(path.read_text())
    # The server checks templates itself: one whose job configuration uses an undeclared variable is refused.
    bad = json.loads(POOLS["fourm-gpu"].read_text())
    del bad["variables"]["properties"]["gpu_count"]
    req = urllib.request.Request(f"{server.api_url}/work_pools/", method="POST",
                                 data=json.dumps({"name": "fourm-bad", "type": "kubernetes",
                                                  "base_job_template": bad}).encode(),
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 422 and "gpu_count" in e.value.read().decode()


@pytest.mark.parametrize("pool,job_variables,gpus", [
    ("fourm-cpu", {}, None),
    ("fourm-gpu", {}, 8),                                           # pretrain/4m-21-b: one 8-GPU node
    ("fourm-gpu", {"gpu_count": 1, "memory_request": "64Gi", "memory_limit": "64Gi"}, 1),   # evaluate
])
def test_worker_renders_valid_jobs(server, pool, job_variables, gpus):
    template = json.loads(POOLS[pool].read_text())
    job = _render(server.api_url, template, job_variables)
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["prefect", "flow-run", "execute"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["PREFECT_API_URL"] == server.api_url and env["PREFECT__FLOW_RUN_ID"]
    assert {"configMapRef": {"name": "fourm-env"}} in c["envFrom"] and {"secretRef": {"name": "fourm-s3"}} in c["envFrom"]
    assert c["workingDir"] == "/opt/fourm"  # writable by the image user: the pull step clones the code there
    assert job["metadata"]["namespace"] == "fourm"
    assert c["image"].endswith("-cuda" if gpus else "-cpu")
    assert c["resources"]["limits"].get("nvidia.com/gpu") == gpus
    if "memory_limit" in job_variables:
        assert c["resources"]["limits"]["memory"] == job_variables["memory_limit"]
    _strict_job(job)
