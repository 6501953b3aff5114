"""Artifact store over fsspec, with the commit protocol.

Layout: ``<root>/<dataset>/<artifact>/shard-00017.parquet`` beside ``shard-00017.manifest.json``
(and ``shard-00017.errors.parquet`` for per-sample failures). Non-shard artifacts (tokenizers,
checkpoints) use ``<root>/<dataset>/<artifact>/`` with ``manifest.json``. ``<root>`` is a local folder
or ``s3://bucket/prefix``.

Commit protocol: every data file is written first (locally to a temporary name, then renamed; on
object stores each PUT is atomic), the manifest last. A part without a manifest does not exist for
readers, so a crash at any point leaves nothing readable that is partial.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import uuid
from typing import Any, Callable, Iterable

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from .manifest import Manifest, sha256_bytes


class NotCommittedError(FileNotFoundError):
    """A reader asked for an artifact part that has no manifest (never committed, or partial)."""


class DigestMismatchError(IOError):
    """A committed file's bytes do not match the digest its manifest records."""


def part_name(shard: int | None) -> str:
    return f"shard-{shard:05d}" if shard is not None else ""


class ArtifactStore:
    """Reads and commits artifacts under one root (local folder or ``s3://bucket/prefix``)."""

    def __init__(self, root: str, storage_options: dict[str, Any] | None = None):
        self.root_uri = root.rstrip("/") or "/"
        self.fs, path = fsspec.core.url_to_fs(self.root_uri, **(storage_options or {}))
        self.storage_options = storage_options or {}
        self.protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.is_local = self.protocol in ("file", "local")
        self.root = os.path.abspath(path) if self.is_local else path.rstrip("/")

    def __repr__(self) -> str:
        return f"ArtifactStore({self.root_uri!r})"

    # ----------------------------------------------------------------------------------------- paths

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *[p for p in parts if p])

    def uri(self, path: str) -> str:
        return path if self.is_local else f"{self.protocol}://{path}"

    def artifact_dir(self, dataset: str, artifact: str) -> str:
        return self.path(dataset, artifact)

    def data_path(self, dataset: str, artifact: str, shard: int | None, suffix: str = ".parquet") -> str:
        if shard is None:
            return self.path(dataset, artifact, f"data{suffix}")
        return self.path(dataset, artifact, f"{part_name(shard)}{suffix}")

    def manifest_path(self, dataset: str, artifact: str, shard: int | None) -> str:
        name = f"{part_name(shard)}.manifest.json" if shard is not None else "manifest.json"
        return self.path(dataset, artifact, name)

    def failure_path(self, dataset: str, artifact: str, shard: int | None) -> str:
        name = f"{part_name(shard)}.failed.json" if shard is not None else "failed.json"
        return self.path(dataset, artifact, name)

    # ------------------------------------------------------------------------------------ raw bytes

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write ``data`` so that ``path`` never holds a partial file."""
        if self.is_local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, data)

    def read_bytes(self, path: str) -> bytes:
        return self.fs.cat_file(path)

    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def remove(self, path: str) -> None:
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            pass

    def invalidate(self) -> None:
        """Forget cached listings (object stores cache directory listings)."""
        self.fs.invalidate_cache()

    # ------------------------------------------------------------------------------------ manifests

    def read_manifest(self, dataset: str, artifact: str, shard: int | None) -> Manifest | None:
        try:
            return Manifest.from_json(self.read_bytes(self.manifest_path(dataset, artifact, shard)))
        except FileNotFoundError:
            return None

    def read_manifest_at(self, manifest_path: str) -> Manifest:
        return Manifest.from_json(self.read_bytes(manifest_path))

    def committed_shards(self, dataset: str, artifact: str) -> list[int]:
        """Shard indices of ``artifact`` that have a manifest, in order."""
        d = self.artifact_dir(dataset, artifact)
        try:
            names = [posixpath.basename(p) for p in self.fs.ls(d, detail=False, refresh=True)]
        except FileNotFoundError:
            return []
        return sorted(int(n[6:11]) for n in names if n.startswith("shard-") and n.endswith(".manifest.json"))

    def failed_shards(self, dataset: str, artifact: str) -> dict[int, dict[str, Any]]:
        d = self.artifact_dir(dataset, artifact)
        try:
            names = [posixpath.basename(p) for p in self.fs.ls(d, detail=False, refresh=True)]
        except FileNotFoundError:
            return {}
        out = {}
        for n in names:
            if n.startswith("shard-") and n.endswith(".failed.json"):
                out[int(n[6:11])] = json.loads(self.read_bytes(posixpath.join(d, n)))
        return out

    def datasets(self) -> list[str]:
        try:
            return sorted(posixpath.basename(p) for p in self.fs.ls(self.root, detail=False, refresh=True)
                          if self.fs.isdir(p))
        except FileNotFoundError:
            return []

    def artifacts(self, dataset: str) -> list[str]:
        """Every artifact (possibly nested, e.g. ``labels/depth``) of a dataset with at least one manifest."""
        base = self.path(dataset)
        try:
            found = self.fs.find(base, withdirs=False)
        except FileNotFoundError:
            return []
        arts = {posixpath.relpath(posixpath.dirname(p), base) for p in found if p.endswith("manifest.json")}
        return sorted(a for a in arts if not a.startswith("_"))

    # --------------------------------------------------------------------------------------- tables

    def read_table(self, dataset: str, artifact: str, shard: int | None, columns: list[str] | None = None,
                   verify: bool = False) -> pa.Table:
        """Read a committed Parquet part; only committed (manifested) parts are readable."""
        manifest = self.read_manifest(dataset, artifact, shard)
        if manifest is None:
            raise NotCommittedError(
                f"{self.uri(self.data_path(dataset, artifact, shard))} is not committed (no manifest); "
                f"run the stage that makes '{artifact}' for dataset '{dataset}'"
            )
        path = self.data_path(dataset, artifact, shard)
        data = self.read_bytes(path)
        if verify and sha256_bytes(data) != manifest.digest:
            raise DigestMismatchError(f"{self.uri(path)} does not match the digest in its manifest")
        return pq.read_table(io.BytesIO(data), columns=columns)

    def read_errors(self, dataset: str, artifact: str, shard: int | None) -> pa.Table | None:
        path = self.data_path(dataset, artifact, shard, ".errors.parquet")
        if self.read_manifest(dataset, artifact, shard) is None or not self.exists(path):
            return None
        return pq.read_table(io.BytesIO(self.read_bytes(path)))

    # ---------------------------------------------------------------------------------------- commit

    def commit(self, manifest_fields: dict[str, Any], files: dict[str, bytes], main: str,
               before_manifest: Callable[[], None] | None = None) -> Manifest:
        """Write ``files`` (suffix -> bytes) for one part, then its manifest.

        ``manifest_fields`` holds everything of the Manifest except the file list, main URI and digest,
        which are computed here from the bytes actually written. ``before_manifest`` runs between the
        two (fault-injection tests stop a process there: files written, part not yet committed).
        """
        from .manifest import FileEntry

        dataset, artifact, shard = manifest_fields["dataset"], manifest_fields["artifact"], manifest_fields["shard"]
        self.remove(self.manifest_path(dataset, artifact, shard))  # an old manifest must not vouch for new bytes
        entries = []
        for suffix, data in files.items():
            path = self.data_path(dataset, artifact, shard, suffix)
            self.write_bytes(path, data)
            entries.append(FileEntry(name=posixpath.basename(path), digest=sha256_bytes(data), bytes=len(data)))
        main_path = self.data_path(dataset, artifact, shard, main)
        manifest = Manifest(
            **manifest_fields,
            uri=self.uri(main_path),
            digest=sha256_bytes(files[main]),
            files=entries,
        )
        if before_manifest is not None:
            before_manifest()
        self.write_bytes(self.manifest_path(dataset, artifact, shard), manifest.to_json().encode())
        self.remove(self.failure_path(dataset, artifact, shard))
        return manifest

    def record_failure(self, dataset: str, artifact: str, shard: int | None, info: dict[str, Any]) -> None:
        self.write_bytes(self.failure_path(dataset, artifact, shard), json.dumps(info, indent=2, default=str).encode())

    # ------------------------------------------------------------------------------------------ runs

    def write_run_record(self, dataset: str, run_id: str, record: dict[str, Any]) -> str:
        path = self.path(dataset, "_runs", f"{run_id}.json")
        self.write_bytes(path, json.dumps(record, indent=2, default=str).encode())
        return path

    def latest_run_record(self, dataset: str) -> dict[str, Any] | None:
        d = self.path(dataset, "_runs")
        try:
            paths = sorted(self.fs.ls(d, detail=False, refresh=True))
        except FileNotFoundError:
            return None
        paths = [p for p in paths if p.endswith(".json")]
        return json.loads(self.read_bytes(paths[-1])) if paths else None


def table_to_parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def table_schema(table: pa.Table) -> dict[str, str]:
    return {f.name: str(f.type) for f in table.schema}


def iter_committed(store: ArtifactStore, dataset: str, artifact: str) -> Iterable[tuple[int, Manifest]]:
    for shard in store.committed_shards(dataset, artifact):
        m = store.read_manifest(dataset, artifact, shard)
        if m is not None:
            yield shard, m
