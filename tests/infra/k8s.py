"""Validation helpers for the Kubernetes recipes in infra/k8s (used by tests/infra).

Core kinds go through kubernetes-validate in strict mode (unknown fields are errors, as with
``kubectl apply --validate=strict``) for the oldest and newest Kubernetes versions we claim. The KubeRay
``RayCluster`` goes through the CRD's published openAPIV3Schema (tests/fixtures/kuberay) with unknown
fields made errors the same way, and its pod templates through Kubernetes' own PodTemplateSpec schema.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "infra" / "k8s"
KUBE_VERSIONS = ("1.29.0", "1.37.0")  # the oldest Kubernetes infra/k8s supports, and the newest schema shipped
RAYCLUSTER_SCHEMA = REPO / "tests" / "fixtures" / "kuberay" / "raycluster-v1-openapi.yaml"


def load_docs(path: Path) -> list[dict[str, Any]]:
    """The YAML documents of one manifest file (empty documents dropped)."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifest_files() -> list[Path]:
    """Every manifest kubectl would apply: base/, secrets/ and jobs/ (work-pools/ holds Prefect templates)."""
    return sorted(p for sub in ("base", "secrets", "jobs") for p in (K8S / sub).glob("*.yaml"))


@lru_cache(maxsize=1)
def _all_docs() -> tuple[dict[str, Any], ...]:
    return tuple(d for p in manifest_files() for d in load_docs(p))


def all_docs() -> list[dict[str, Any]]:
    """Every manifest document (a fresh copy: callers may mutate it)."""
    return copy.deepcopy(list(_all_docs()))


def _short(e: kubernetes_validate.ValidationError | jsonschema.ValidationError) -> str:
    """The error without the (huge) schema kubernetes-validate prints."""
    path = "/".join(str(p) for p in getattr(e, "absolute_path", getattr(e, "path", [])))
    return f"{path}: {getattr(e, 'message', e)}"


def validate_core(doc: dict[str, Any], versions: tuple[str, ...] = KUBE_VERSIONS) -> None:
    """Strict validation of a core/built-in kind against each Kubernetes version's schema."""
    for v in versions:
        try:
            kubernetes_validate.validate(doc, v, strict=True)
        except kubernetes_validate.ValidationError as e:
            raise AssertionError(f"{doc['kind']}/{doc['metadata'].get('name')} invalid for Kubernetes {v}: "
                                 f"{_short(e)}") from None


def closed(schema: Any) -> Any:
    """A copy of an OpenAPI v3 schema in which every object with ``properties`` rejects unknown fields,
    as the API server's strict field validation does (unless the node preserves unknown fields)."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return schema


def pod_templates(raycluster: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "head", raycluster["spec"]["headGroupSpec"]["template"]
    for g in raycluster["spec"].get("workerGroupSpecs", []):
        yield g["groupName"], g["template"]


def validate_raycluster(doc: dict[str, Any]) -> None:
    """The RayCluster against KubeRay's CRD schema (closed), then each pod template against Kubernetes'."""
    schema = closed(yaml.safe_load(RAYCLUSTER_SCHEMA.read_text()))
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        raise AssertionError("RayCluster does not match the KubeRay CRD:\n" + "\n".join(_short(e) for e in errors))
    for group, template in pod_templates(doc):
        validate_core({"apiVersion": "v1", "kind": "PodTemplate",
                       "metadata": {"name": f"{doc['metadata']['name']}-{group}"}, "template": template})
