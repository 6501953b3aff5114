"""infra/k8s: every manifest validates against the Kubernetes schemas (strict), the RayCluster against
KubeRay's CRD schema and through Ray's own KubeRay autoscaler translation, and the names the manifests
use to find each other (ConfigMaps, Secrets, Services, pools, the pre-training rendezvous) agree."""

from __future__ import annotations

import copy
import json
import re

import pytest

from tests.infra.k8s import (K8S, all_docs, closed, load_docs, manifest_files, validate_core,
                             validate_raycluster)

IMAGES = {"registry.example.com/fourm/fourm-pipeline:0.1.0-cpu", "registry.example.com/fourm/fourm-pipeline:0.1.0-cuda",
          "postgres:16.10-bookworm"}


def _kind(kind: str, name: str | None = None) -> list[dict]:
    return [d for d in all_docs() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def _one(kind: str, name: str) -> dict:
    (doc,) = _kind(kind, name)
    return doc


def _pod_specs() -> list[tuple[str, dict]]:
    """(owner, pod spec) of every pod the manifests create."""
    out = []
    for d in all_docs():
        if d["kind"] in ("Deployment", "Job"):
            out.append((f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]))
        elif d["kind"] == "RayCluster":
            out.append(("RayCluster head", d["spec"]["headGroupSpec"]["template"]["spec"]))
            out += [(f"RayCluster {g['groupName']}", g["template"]["spec"]) for g in d["spec"]["workerGroupSpecs"]]
    return out


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_validates(path):
    docs = load_docs(path)
    assert docs, f"{path} holds no manifest"
    for doc in docs:
        assert doc["metadata"].get("namespace", "fourm") == "fourm" or doc["kind"] == "Namespace"
        if doc["kind"] == "RayCluster":
            assert doc["apiVersion"] == "ray.io/v1"
            validate_raycluster(doc)
        else:
            validate_core(doc)


def test_validation_rejects_what_the_api_server_would():
    """The checks can fail: a misspelt field in a core kind, in the RayCluster and in its pod template."""
    server = copy.deepcopy(_one("Deployment", "prefect-server"))
    server["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    with pytest.raises(AssertionError, match="imagePullPolice"):
        validate_core(server)
    ray = _one("RayCluster", "fourm-ray")
    for mutate, word in [(lambda r: r["spec"]["workerGroupSpecs"][1].update(maxReplica=3), "maxReplica"),
                         (lambda r: r["spec"]["workerGroupSpecs"][1].pop("groupName"), "groupName"),
                         (lambda r: r["spec"]["autoscalerOptions"].update(upscalingMode="Fast"), "Fast"),
                         (lambda r: r["spec"]["headGroupSpec"]["template"]["spec"].update(nodeSelecter={}),
                          "nodeSelecter")]:
        bad = copy.deepcopy(ray)
        mutate(bad)
        with pytest.raises(AssertionError, match=word):
            validate_raycluster(bad)
    assert closed({"properties": {"a": {}}})["additionalProperties"] is False


def test_raycluster_as_ray_autoscaler_reads_it():
    """KubeRay's autoscaler (shipped in the ray package) derives its node types from the RayCluster: the GPU
    group must come out with GPUs and scale from 0, the head with no CPUs for tasks; Ray's config schema
    accepts the result; the dashboard listens beyond loopback and the Ray version is the lock's."""
    import ray
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr
    from ray.autoscaler._private.util import validate_config

    cr = _one("RayCluster", "fourm-ray")
    config = _derive_autoscaling_config_from_ray_cr(cr)
    validate_config(config)
    types = config["available_node_types"]
    assert types["gpu"]["resources"]["GPU"] == 1 and types["gpu"]["min_workers"] == 0
    assert types["gpu"]["max_workers"] >= 1 and types["cpu"]["resources"]["CPU"] == 16
    assert types["headgroup"]["resources"]["CPU"] == 0
    assert cr["spec"]["enableInTreeAutoscaling"] is True
    assert cr["spec"]["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert cr["spec"]["rayVersion"] == ray.__version__
    ports = {p["name"]: p["containerPort"] for p in cr["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]}
    assert ports == {"gcs-server": 6379, "dashboard": 8265, "client": 10001, "metrics": 8080}


def test_names_the_manifests_share_agree():
    docs = all_docs()
    defined = {(d["kind"], d["metadata"]["name"]) for d in docs}
    env = _one("ConfigMap", "fourm-env")["data"]
    for owner, spec in _pod_specs():
        for c in spec["containers"]:
            assert c["image"] in IMAGES, f"{owner}: unexpected image {c['image']}"
            for src in c.get("envFrom", []):
                ref = ("ConfigMap", src["configMapRef"]["name"]) if "configMapRef" in src else ("Secret", src["secretRef"]["name"])
                assert ref in defined, f"{owner} reads {ref}, which no manifest defines"
            for e in c.get("env", []):
                if "secretKeyRef" in e.get("valueFrom", {}):
                    ref = e["valueFrom"]["secretKeyRef"]
                    secret = _one("Secret", ref["name"])
                    assert ref["key"] in secret["stringData"], f"{owner}: Secret {ref['name']} has no {ref['key']}"
        for v in spec.get("volumes", []):
            if "persistentVolumeClaim" in v:
                assert ("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]) in defined
        if "serviceAccountName" in spec:
            assert ("ServiceAccount", spec["serviceAccountName"]) in defined
        # Non-root everywhere but PostgreSQL (its image starts as root and drops to the postgres user).
        if "postgres" not in owner:
            assert spec["securityContext"]["runAsNonRoot"] is True, owner
    # Every Service selects the pods of some workload.
    workload_labels = [d["spec"]["template"]["metadata"].get("labels", {}) for d in docs if d["kind"] == "Deployment"]
    for svc in _kind("Service"):
        sel = svc["spec"]["selector"]
        if "job-name" in sel:
            assert ("Job", sel["job-name"]) in defined
        else:
            assert any(sel.items() <= labels.items() for labels in workload_labels), f"Service {svc['metadata']['name']}"
    # The addresses in the ConfigMap are the Services defined here.
    ray = _one("RayCluster", "fourm-ray")
    assert env["FOURM_RAY_ADDRESS"] == f"{ray['metadata']['name']}-head-svc.fourm.svc.cluster.local:6379"
    server_svc = _one("Service", "prefect-server")
    assert env["PREFECT_API_URL"] == f"http://prefect-server.fourm.svc.cluster.local:{server_svc['spec']['ports'][0]['port']}/api"
    json.loads(env["FOURM_STORAGE_OPTIONS"])  # the pipeline parses it as JSON
    # The Prefect server reaches PostgreSQL by its Service, as the database user the database was created with.
    pg = _one("Deployment", "prefect-postgres")["spec"]["template"]["spec"]["containers"][0]
    pg_env = {e["name"]: e.get("value") for e in pg["env"]}
    server = _one("Deployment", "prefect-server")["spec"]["template"]["spec"]["containers"][0]
    url = {e["name"]: e.get("value") for e in server["env"]}["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert url == (f"postgresql+asyncpg://{pg_env['POSTGRES_USER']}:$(POSTGRES_PASSWORD)@prefect-postgres:"
                   f"{_one('Service', 'prefect-postgres')['spec']['ports'][0]['port']}/{pg_env['POSTGRES_DB']}")


def test_workers_poll_the_pools_whose_templates_ship():
    pools = sorted(p.stem for p in (K8S / "work-pools").glob("*.json"))
    assert pools == ["fourm-cpu", "fourm-gpu"]
    polled = []
    for d in _kind("Deployment"):
        cmd = d["spec"]["template"]["spec"]["containers"][0].get("command", [])
        if cmd[:3] == ["prefect", "worker", "start"]:
            assert cmd[cmd.index("--type") + 1] == "kubernetes"
            polled.append(cmd[cmd.index("--pool") + 1])
            assert d["spec"]["template"]["spec"]["serviceAccountName"] == "prefect-worker"
    assert sorted(polled) == pools


def test_pretrain_job_rendezvous_is_consistent():
    """The Indexed Job's torchrun command parses with torchrun's own parser; its node count matches the
    Job's completions and parallelism; the rendezvous endpoint is pod 0's DNS name under the headless
    Service; the training command after ``-m train_stage`` parses and names a train preset that loads."""
    from torch.distributed.run import get_args_parser

    from train_stage.config import load_train_config

    job = _one("Job", "fourm-pretrain-4m21b")
    spec = job["spec"]
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
    argv = [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in c["command"]]
    assert argv[:3] == ["python", "-m", "torch.distributed.run"]
    args = get_args_parser().parse_args(argv[3:])
    assert spec["completionMode"] == "Indexed"
    assert int(args.nnodes) == spec["completions"] == spec["parallelism"] >= 2
    assert args.rdzv_backend == "c10d" and args.module
    gpus = c["resources"]["limits"]["nvidia.com/gpu"]
    assert int(args.nproc_per_node) == gpus
    svc = _one("Service", pod["subdomain"])
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    host, port = args.rdzv_endpoint.rsplit(":", 1)
    assert host == f"{job['metadata']['name']}-0.{pod['subdomain']}"
    assert int(port) == svc["spec"]["ports"][0]["port"] == c["ports"][0]["containerPort"]
    assert args.training_script == "train_stage"
    train = args.training_script_args
    assert train[0] == "train"
    config = train[train.index("--config") + 1]
    assert load_train_config(config).run_name  # a preset that exists and validates
    from train_stage.__main__ import main  # noqa: F401  (the module torchrun runs)
