"""Operations views over the store: the stage x shard status of a dataset, and the lineage of a part.

Reads manifests, failure records and the latest run record only; imports no Prefect, no Ray and, when a
run record exists, no stage package either (so ``status`` is fast and works on a box without torch).
"""

from __future__ import annotations

import json
import os
import posixpath
from typing import Any

import fsspec

from fourm_core.config import ConfigError, load_dataset_config
from fourm_core.lineage import StatusRow, describe, lineage, shard_status
from fourm_core.manifest import Manifest
from fourm_core.store import DATA_DIR, ArtifactStore
from fourm_core.verify import PartCheck, verify_parts

STORAGE_OPTIONS_ENV = "FOURM_STORAGE_OPTIONS"  # JSON, e.g. {"endpoint_url": "http://s3.local:8333"}


def storage_options_from(text: str | None) -> dict[str, Any] | None:
    """Storage options from a JSON string, else from $FOURM_STORAGE_OPTIONS, else None."""
    text = text or os.environ.get(STORAGE_OPTIONS_ENV)
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"storage options must be a JSON object: {err}") from None
    if not isinstance(value, dict):
        raise ConfigError("storage options must be a JSON object")
    return value


def dataset_name(dataset: str) -> str:
    """The store folder of ``dataset``: a preset or YAML path gives its config's name; else the name as is."""
    try:
        return load_dataset_config(dataset).name
    except ConfigError:
        return dataset


def dataset_status(store: ArtifactStore, dataset: str) -> tuple[list[StatusRow], dict[str, Any] | None]:
    """Stage x shard rows of ``dataset`` and the latest run record they were judged against."""
    name = dataset_name(dataset)
    record = store.latest_run_record(name)
    stage_artifacts, expected = _stage_artifacts(store, name, record)
    return shard_status(store, name, stage_artifacts, expected), record


def _stage_artifacts(store: ArtifactStore, name: str, record: dict[str, Any] | None
                     ) -> tuple[dict[str, tuple[str, ...]], dict[str, list[int]]]:
    """stage -> its artifacts (from the run record, plus artifacts committed outside a recorded run, under the
    stage their manifests name), and the planned shards per stage / artifact."""
    stage_artifacts: dict[str, tuple[str, ...]] = {}
    expected: dict[str, list[int]] = {}
    if record:
        stage_artifacts = {s: tuple(a) for s, a in record.get("stage_artifacts", {}).items()}
        expected = {s: list(p) for s, p in record.get("plan", {}).items()}
        expected.update({a: list(p) for a, p in record.get("artifact_plan", {}).items()})
    known = {a for arts in stage_artifacts.values() for a in arts}
    for artifact in store.artifacts(name):
        if artifact not in known:
            stage = _stage_of(store, name, artifact)
            stage_artifacts[stage] = stage_artifacts.get(stage, ()) + (artifact,)
    return stage_artifacts, expected


def verify_dataset(store: ArtifactStore, dataset: str, stage: str | None = None,
                   shards: list[int] | None = None) -> list[PartCheck]:
    """Re-read every committed part of ``dataset`` (or of one stage / some shards) against its manifest."""
    name = dataset_name(dataset)
    stage_artifacts, _ = _stage_artifacts(store, name, store.latest_run_record(name))
    if stage is not None:
        if stage not in stage_artifacts:
            raise LookupError(f"no artifacts of stage {stage!r} in {name!r} under {store.root_uri}; "
                              f"stages: {', '.join(stage_artifacts) or '-'}")
        stage_artifacts = {stage: stage_artifacts[stage]}
    parts = []
    for artifacts in stage_artifacts.values():
        for artifact in artifacts:
            index = store.index(name, artifact)
            for part, entry in sorted(index.entries.items(), key=lambda kv: -1 if kv[0] is None else kv[0]):
                if (entry.has_manifest or entry.problem) and (shards is None or part in shards):
                    parts.append((name, artifact, part))
    return verify_parts(store, parts)


def _stage_of(store: ArtifactStore, dataset: str, artifact: str) -> str:
    if store.use_index:
        return next((e.stage for e in store.index(dataset, artifact).entries.values() if e.stage), "?")
    shards = store.committed_shards(dataset, artifact)
    m = store.read_manifest(dataset, artifact, shards[0] if shards else None)
    return m.ingredients.stage if m else "?"


def open_part(uri: str, root: str | None, storage_options: dict[str, Any] | None) -> tuple[ArtifactStore, Manifest]:
    """The store and manifest of a part given by its data path, manifest path or URI.

    Without ``root`` the store root is derived from the manifest itself (it names its dataset and
    artifact), so ``lineage`` works on any path an ops engineer copies from a log.
    """
    if root:
        store = ArtifactStore(root, storage_options)
        rel = uri
        for prefix in (store.root_uri.rstrip("/") + "/", store.root.rstrip("/") + "/"):
            if rel.startswith(prefix):
                rel = rel[len(prefix):]
        uri = store.uri(store.path(rel)) if "://" not in rel and not os.path.isabs(rel) else uri
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    local = protocol in ("file", "local")
    if local:
        path = os.path.abspath(path)
    candidates = _manifest_paths(path)
    for manifest_path in candidates:
        try:
            manifest = Manifest.from_json(fs.cat_file(manifest_path))
            break
        except FileNotFoundError:
            continue
    else:
        raise FileNotFoundError(f"no manifest at {candidates[0]}: {uri} is not a committed artifact part") from None
    base = posixpath.dirname(manifest_path)  # <root>/<dataset>/<artifact>
    suffix = f"/{manifest.dataset}/{manifest.artifact}"
    if not base.endswith(suffix):
        raise ValueError(f"{manifest_path} records {manifest.dataset}/{manifest.artifact}, which does not match its path")
    root_path = base[: -len(suffix)] or "/"
    store = ArtifactStore(root_path if local else f"{protocol}://{root_path}", storage_options)
    return store, manifest


def _manifest_paths(path: str) -> list[str]:
    """Where the manifest of the part named by ``path`` can be, most likely first."""
    d, name = posixpath.split(path.rstrip("/"))
    if name.endswith("manifest.json"):
        return [path]
    if name.startswith("shard-") and len(name) >= 11:
        beside = posixpath.join(d, name[:11] + ".manifest.json")
        if posixpath.basename(d) == DATA_DIR:  # <artifact>/data/shard-N.parquet (or an old artifact named .../data)
            return [posixpath.join(posixpath.dirname(d), name[:11] + ".manifest.json"), beside]
        return [beside]
    if name.startswith("data.") or name == "":
        return [posixpath.join(d, "manifest.json")]
    # a non-shard artifact's folder, or a bare "shard-00003" name
    return [posixpath.join(path, "manifest.json")]


def lineage_text(uri: str, root: str | None = None, storage_options: dict[str, Any] | None = None,
                 depth: int | None = None) -> str:
    """The part's upstream tree (``depth`` levels of inputs; None: all) and the commands that re-make it."""
    from fourm_core.rerun import rerun_commands

    store, m = open_part(uri, root, storage_options)
    lines = describe(lineage(store, m.dataset, m.artifact, m.shard, depth))
    cli, deployment = rerun_commands(m.dataset, m.ingredients.stage, m.shard, store.root_uri)
    return "\n".join(lines + [f"re-make this part: {cli}", f"               or: {deployment}"])
