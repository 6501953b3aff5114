"""Lineage: the upstream graph of manifests, and the stage x shard status of a dataset."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from . import lease
from .gcpause import gc_paused
from .manifest import Manifest
from .store import DATA_DIR, ArtifactStore


@dataclass
class LineageNode:
    manifest: Manifest
    parents: list["LineageNode"] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # inputs whose manifest no longer exists or changed
    not_expanded: list[str] = field(default_factory=list)  # inputs past the depth limit (one line each)


def parse_part(store: ArtifactStore, path: str) -> tuple[str, str, int | None]:
    """(dataset, artifact, shard) from a data or manifest path/URI under the store root."""
    p = path
    for prefix in (store.root_uri.rstrip("/") + "/", store.root.rstrip("/") + "/"):
        if p.startswith(prefix):
            p = p[len(prefix):]
            break
    parts = p.strip("/").split("/")
    if len(parts) < 3:
        raise ValueError(f"{path!r} is not a part path under {store.root_uri} "
                         f"(expected <dataset>/<artifact>/data/shard-NNNNN.parquet)")
    dataset, name = parts[0], parts[-1]
    if name.startswith("shard-"):
        # a data file in <artifact>/data/ (the layout since data/ exists), or beside its manifest (older parts)
        in_data = parts[-2] == DATA_DIR and len(parts) >= 4 and not name.endswith((".manifest.json", ".failed.json"))
        return dataset, "/".join(parts[1:-2] if in_data else parts[1:-1]), int(name[6:11])
    return dataset, "/".join(parts[1:-1]), None


def lineage(store: ArtifactStore, dataset: str, artifact: str, shard: int | None, depth: int | None = None,
            _depth: int = 0) -> LineageNode:
    """The upstream tree of one part; ``depth`` limits how many levels of inputs are expanded (None: all)."""
    m = store.read_manifest(dataset, artifact, shard)
    if m is None:
        raise FileNotFoundError(f"no manifest for {dataset}/{artifact} shard {shard} under {store.root_uri}")
    node = LineageNode(m)
    if _depth > 32 or (depth is not None and _depth >= depth):
        node.not_expanded = [f"{r.dataset}/{r.artifact}" + ("" if r.shard is None else f" shard {r.shard}")
                             + f" (digest {r.digest[:16]})" for r in m.ingredients.inputs]
        return node
    for ref in m.ingredients.inputs:
        parent = store.read_manifest(ref.dataset, ref.artifact, ref.shard)
        if parent is None or parent.digest != ref.digest:
            node.missing.append(f"{ref.uri} ({'gone' if parent is None else 'changed since'})")
            continue
        node.parents.append(lineage(store, ref.dataset, ref.artifact, ref.shard, depth, _depth + 1))
    return node


def describe(node: LineageNode, indent: str = "") -> list[str]:
    """Human-readable tree lines for ``python -m pipelines lineage``."""
    m, ing = node.manifest, node.manifest.ingredients
    lines = [
        f"{indent}{m.dataset}/{m.artifact}" + (f" shard {m.shard}" if m.shard is not None else ""),
        f"{indent}  uri:        {m.uri}",
        f"{indent}  digest:     {m.digest[:16]}  rows: {m.rows}  errors: {m.errors.count}"
        + (f" {m.errors.by_reason}" if m.errors.by_reason else ""),
        f"{indent}  stage:      {ing.stage} (code {ing.code_version}, git {ing.git_commit[:12]})",
        f"{indent}  cache key:  {m.cache_key}",
        f"{indent}  config:     {_short(ing.config)}",
    ]
    if ing.model:
        lines.append(f"{indent}  model:      {ing.model.id} from {ing.model.source} (weights {ing.model.digest[:16]})")
    lines.append(f"{indent}  made:       {m.timings.finished:%Y-%m-%d %H:%M:%S} UTC in {m.timings.seconds:.2f}s "
                 f"on {m.host}, flow run {m.flow_run_id or '-'}")
    for miss in node.missing:
        lines.append(f"{indent}  input MISSING: {miss}")
    for i, parent in enumerate(node.parents):
        lines.append(f"{indent}  <- input {i + 1}/{len(node.parents)} (digest {parent.manifest.digest[:16]})")
        lines.extend(describe(parent, indent + "     "))
    if node.not_expanded:
        shown = node.not_expanded[:10]
        lines.append(f"{indent}  inputs ({len(node.not_expanded)}, not expanded: raise --depth):")
        lines += [f"{indent}    <- {text}" for text in shown]
        if len(node.not_expanded) > len(shown):
            lines.append(f"{indent}    ... and {len(node.not_expanded) - len(shown)} more")
    return lines


def _short(config: dict[str, Any], limit: int = 160) -> str:
    import json

    text = json.dumps(config, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class StatusRow:
    stage: str
    artifact: str
    shard: int | None  # None: a whole-dataset artifact (e.g. a trained tokenizer)
    state: str  # done | cached | failed | missing | unreadable | running | stale
    rows: int = 0
    errors: int = 0
    detail: str = ""
    seconds: float = 0.0  # how long the unit took to make (its manifest's timings)


def cached_units(record: dict[str, Any]) -> set[tuple[str, int | None]]:
    """(artifact, shard) pairs a run record reports as cached: the compact ``cached`` map (artifact ->
    shards; ``null`` for an unsharded part) and, from older records, units listed with status cached."""
    out = {(a, u.get("shard")) for u in record.get("units", []) if u.get("status") == "cached"
           for a in u.get("artifacts", [])}
    out.update((a, s) for a, shards in record.get("cached", {}).items() for s in shards)
    return out


def shard_status(store: ArtifactStore, dataset: str, stage_artifacts: dict[str, tuple[str, ...]],
                 expected: dict[str, list[int]]) -> list[StatusRow]:
    """Stage x shard states. ``expected`` gives each stage's planned shards, or an artifact's where the stage
    plans it on fewer shards (missing = planned, no manifest).

    A committed shard is 'cached' when the latest run found it already committed, 'done' otherwise; a
    failure record (the last attempt failed, or no manifest) makes it 'failed'; a manifest that cannot be
    read is 'unreadable' with its path, and every other row still shows. Reads each artifact's index
    (one snapshot and a short listing each, see ``fourm_core.index``), not one manifest per unit.
    """
    with gc_paused():  # one row and one index entry per unit, all acyclic (fourm_core/gcpause.py)
        return _shard_status(store, dataset, stage_artifacts, expected)


def _shard_status(store: ArtifactStore, dataset: str, stage_artifacts: dict[str, tuple[str, ...]],
                  expected: dict[str, list[int]]) -> list[StatusRow]:
    last = store.latest_run_record(dataset) or {}
    cached = cached_units(last)
    rows: list[StatusRow] = []
    all_artifacts = [a for arts in stage_artifacts.values() for a in arts]
    store.preload(dataset, all_artifacts)
    # one lease listing per artifact, in parallel (on S3 a listing and, for an empty folder, a HEAD each)
    with ThreadPoolExecutor(max(1, min(8, len(all_artifacts)))) as pool:
        running = dict(zip(all_artifacts, pool.map(lambda a: lease.running(store, dataset, a), all_artifacts)))
    for stage, artifacts in stage_artifacts.items():
        for artifact in artifacts:
            index = store.index(dataset, artifact)
            whole = index.get(None)
            if whole is not None and whole.committed and not index.committed():  # an unsharded artifact: one row
                state = "cached" if (artifact, None) in cached else "done"
                rows.append(StatusRow(stage, artifact, None, state, whole.rows, whole.errors, seconds=whole.seconds))
                continue
            planned = expected.get(artifact, expected.get(stage, []))
            parts = {p for p in index.entries if p is not None}
            leases = {p: lz for p, lz in running[artifact].items() if p is not None}
            for shard in sorted(parts | set(planned) | set(leases)):
                entry = index.get(shard)
                if shard in leases:  # being computed now (or its worker died: stale)
                    lz = leases[shard]
                    rows.append(StatusRow(stage, artifact, shard, lz["state"], seconds=time.time() - lz["started"],
                                          detail=f"{lz.get('host')} pid {lz.get('pid')}, last heartbeat "
                                                 f"{lz['age_s']:.0f}s ago"))
                elif entry is None:
                    rows.append(StatusRow(stage, artifact, shard, "missing"))
                elif entry.problem:
                    rows.append(StatusRow(stage, artifact, shard, "unreadable", detail=entry.problem))
                elif entry.failure_json:
                    rows.append(StatusRow(stage, artifact, shard, "failed",
                                          detail=(entry.failure() or {}).get("error", "")))
                else:
                    state = "cached" if (artifact, shard) in cached else "done"
                    rows.append(StatusRow(stage, artifact, shard, state, entry.rows, entry.errors,
                                          seconds=entry.seconds))
    return rows
