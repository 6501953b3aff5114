"""Artifact store over fsspec, with the commit protocol.

Layout: a sharded part's files are ``<root>/<dataset>/<artifact>/data/shard-00017.parquet`` (and
``shard-00017.errors.parquet`` for per-sample failures, any other file of the part beside it); its manifest
``shard-00017.manifest.json`` and failure record ``shard-00017.failed.json`` are in ``<artifact>/`` itself.
Non-shard artifacts (tokenizers, checkpoints) keep everything in ``<root>/<dataset>/<artifact>/`` with
``manifest.json``. ``<root>`` is a local folder or ``s3://bucket/prefix``.

Why the ``data/`` folder: the cached check compares every data file's size with its manifest from one listing
per artifact; on S3 that listing then pages through the data files only, not the manifests too (the listing's
cost is per listed key, on the server as much as on the client). Parts committed before ``data/`` existed
have their files beside the manifest ("old layout"); the manifest's URI says which layout a part uses, every
reader follows it (:meth:`ArtifactStore.part_path`), and the size listing also lists ``<artifact>/`` while
the artifact's index still has old-layout parts. Re-making an old-layout part writes it in ``data/`` and
deletes its old files after the new manifest is committed; an existing store is never recomputed for this.

Commit protocol: every data file is written first (locally to a temporary name, then renamed; on
object stores each PUT is atomic), the manifest last. A part without a manifest does not exist for
readers, so a crash at any point leaves nothing readable that is partial. Each commit (and each failure
record) is bracketed by two journal marks of the artifact's index (``fourm_core.index``), so the index
never vouches for a part whose manifest may have changed.

Reads: by default every manifest read is a GET of the manifest itself. A store made with
``use_index=True`` (the orchestrator, ``status``, ``lineage``, planning) answers ``read_manifest``,
``committed_shards``, ``failed_shards`` and ``artifacts`` from the per-artifact index instead, loaded once
per artifact until :meth:`ArtifactStore.invalidate`.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterable

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from . import index as _index
from .manifest import InputRef, Manifest, sha256_bytes
from .s3list import s3_data_sizes, s3_sizes


class NotCommittedError(FileNotFoundError):
    """A reader asked for an artifact part that has no manifest (never committed, or partial)."""


class DigestMismatchError(IOError):
    """A committed file's bytes do not match the digest its manifest records."""


class CorruptPartError(IOError):
    """A committed part's data cannot be read or is not what its manifest describes (truncated, tampered)."""


class ManifestError(ValueError):
    """A manifest file exists but is not a valid manifest (its path is in the message)."""


DATA_DIR = "data"  # sharded parts' files: <artifact>/data/shard-NNNNN.parquet (manifests stay in <artifact>/)


def part_name(shard: int | None) -> str:
    return f"shard-{shard:05d}" if shard is not None else ""


def in_data_dir(dataset: str, artifact: str, uri: str) -> bool:
    """Whether a sharded part's main file ``uri`` (as its manifest records it: relative to the store root, or an
    absolute URI from before relative ones) is in the ``<artifact>/data/`` layout rather than beside the
    manifest (the old layout)."""
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return ("/" + uri).endswith(f"/{dataset}/{artifact}/{DATA_DIR}/{name}")


def under_root(root_base: str, uri: str) -> str:
    """A URI as a manifest records it (relative to the store root; absolute in manifests from before relative
    ones) under the root URI ``root_base`` (no trailing slash): ``ArtifactStore.absolute`` without a store."""
    return uri if not uri or "://" in uri or uri.startswith("/") else f"{root_base}/{uri}"


class ArtifactStore:
    """Reads and commits artifacts under one root (local folder or ``s3://bucket/prefix``)."""

    def __init__(self, root: str, storage_options: dict[str, Any] | None = None, use_index: bool = False):
        self.use_index = use_index
        self._indexes: dict[tuple[str, str], _index.ArtifactIndex] = {}
        self._index_locks: dict[tuple[str, str], threading.Lock] = {}  # one load per artifact across threads
        self._sizes: dict[tuple[str, str, str], dict[int, int]] = {}
        self._sizes_pending: dict[tuple[str, str, str], Future] = {}  # listings running in the background
        self.root_uri = root.rstrip("/") or "/"
        self.fs, path = fsspec.core.url_to_fs(self.root_uri, **(storage_options or {}))
        self.storage_options = storage_options or {}
        self.protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.is_local = self.protocol in ("file", "local")
        self.root = os.path.abspath(path) if self.is_local else path.rstrip("/")
        self.root_base = self.uri(self.root).rstrip("/")  # what a relative URI is put under (see under_root)

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
        """Where a commit writes a part's file ``suffix`` (``<artifact>/data/shard-NNNNN<suffix>`` for a sharded
        part). To read a committed part's file use :meth:`part_path` (older parts are in the old layout)."""
        if shard is None:
            return self.path(dataset, artifact, f"data{suffix}")
        return self.path(dataset, artifact, DATA_DIR, f"{part_name(shard)}{suffix}")

    def old_data_path(self, dataset: str, artifact: str, shard: int, suffix: str = ".parquet") -> str:
        """A sharded part's file in the old layout (beside its manifest), for parts committed before ``data/``."""
        return self.path(dataset, artifact, f"{part_name(shard)}{suffix}")

    def part_path(self, dataset: str, artifact: str, shard: int | None, suffix: str = ".parquet",
                  uri: str | None = None) -> str:
        """The path under this root of a committed part's file ``suffix``, in the layout its manifest records
        (``uri``: the manifest's main URI when the caller has it; else looked up, from the index's columns when
        reading through it). A part that is not committed gets :meth:`data_path`."""
        if shard is None:
            return self.data_path(dataset, artifact, None, suffix)
        if uri is None:
            uri = self._part_uri(dataset, artifact, shard)
        if uri is None or in_data_dir(dataset, artifact, uri):
            return self.data_path(dataset, artifact, shard, suffix)
        return self.old_data_path(dataset, artifact, shard, suffix)

    def _part_uri(self, dataset: str, artifact: str, shard: int) -> str | None:
        if self.use_index:
            entry = self.index(dataset, artifact).get(shard)
            if entry is None or not entry.committed:
                return None
            if entry.uri is not None:
                return entry.uri
        try:
            m = self.read_manifest(dataset, artifact, shard)
        except ValueError:
            return None
        return None if m is None else m.uri

    def manifest_path(self, dataset: str, artifact: str, shard: int | None) -> str:
        name = f"{part_name(shard)}.manifest.json" if shard is not None else "manifest.json"
        return self.path(dataset, artifact, name)

    def failure_path(self, dataset: str, artifact: str, shard: int | None) -> str:
        name = f"{part_name(shard)}.failed.json" if shard is not None else "failed.json"
        return self.path(dataset, artifact, name)

    # ------------------------------------------------------------------------------------ raw bytes

    def write_bytes(self, path: str, data: bytes, durable: bool = True) -> None:
        """Write ``data`` so that ``path`` never holds a partial file.

        Locally: a temporary name, fsync'd, then renamed, so that after a power loss the name holds the whole
        bytes or the old file, never a hole. ``durable=False`` skips the fsync for files that carry no data
        a reader trusts (leases: advisory, rewritten every heartbeat); an empty file (an index mark) has
        no bytes to lose or to see half-written: it is created in place, without a temporary name or an
        fsync. A killed process loses nothing either way (the page cache survives it); the fsync costs
        5-10 ms on a busy disk, which a small shard's commit pays per file.
        """
        if self.is_local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if not data:  # a rename cost ~0.1 ms CPU and ~2 ms wall per mark, two marks per commit
                open(path, "wb").close()
                return
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as f:
                f.write(data)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, data)

    # The process's writer threads for write_files, started on first use and reused by every call (a pool per call
    # cost a thread start and join per part commit). Small: they overlap fsyncs and PUTs, not CPU work; idle ones
    # cost nothing, and at exit the interpreter joins them once their queue is empty. A forked child (another pid)
    # starts its own: the parent's threads do not exist there.
    WRITER_THREADS = 4
    _WRITER_PREFIX = "store-writer"
    _writers: tuple[int, ThreadPoolExecutor] | None = None
    _writers_lock = threading.Lock()

    @classmethod
    def _writer_pool(cls) -> ThreadPoolExecutor:
        pid = os.getpid()
        current = ArtifactStore._writers
        if current is not None and current[0] == pid:
            return current[1]
        if current is not None:  # forked: the lock may have been held by a thread that does not exist here
            ArtifactStore._writers_lock = threading.Lock()
        with ArtifactStore._writers_lock:
            if ArtifactStore._writers is None or ArtifactStore._writers[0] != pid:
                ArtifactStore._writers = (pid, ThreadPoolExecutor(cls.WRITER_THREADS,
                                                                  thread_name_prefix=cls._WRITER_PREFIX))
            return ArtifactStore._writers[1]

    def write_files(self, items: dict[str, bytes]) -> None:
        """:meth:`write_bytes` for several paths at once, in parallel (a part's data and errors files): their
        fsyncs (or PUTs) overlap instead of queueing, on the process's writer threads. All are written when this
        returns, or it raises (after every other write of the call has finished: none is left in flight)."""
        if len(items) <= 1 or threading.current_thread().name.startswith(self._WRITER_PREFIX):
            for path, data in items.items():  # one file, or called on a writer thread (never wait on the pool there)
                self.write_bytes(path, data)
            return
        futures = [self._writer_pool().submit(self.write_bytes, path, data) for path, data in items.items()]
        try:
            for f in futures:
                f.result()
        finally:
            wait(futures)

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
        """Forget cached listings (object stores cache directory listings) and loaded indexes."""
        self.fs.invalidate_cache()
        self._indexes.clear()
        self._sizes.clear()
        self._sizes_pending.clear()  # a listing still running is left to finish; its answer is not used

    def index(self, dataset: str, artifact: str) -> _index.ArtifactIndex:
        """The artifact's index (loaded once per store until :meth:`invalidate`)."""
        key = (dataset, artifact)
        ix = self._indexes.get(key)
        if ix is None:
            # a background size listing (preload_sizes) may ask for the same index: one load, the other waits
            with self._index_locks.setdefault(key, threading.Lock()):
                ix = self._indexes.get(key)
                if ix is None:
                    ix = self._indexes[key] = _index.load_index(self, dataset, artifact)
        return ix

    def preload(self, dataset: str, artifacts: Iterable[str]) -> None:
        """Load several artifacts' indexes at once (their snapshot reads and listings overlap)."""
        todo = [a for a in dict.fromkeys(artifacts) if (dataset, a) not in self._indexes]
        if not todo:
            return
        with ThreadPoolExecutor(min(8, len(todo))) as pool:
            list(pool.map(lambda a: self.index(dataset, a), todo))

    # ------------------------------------------------------------------------------------ manifests

    def read_manifest(self, dataset: str, artifact: str, shard: int | None) -> Manifest | None:
        if self.use_index:
            entry = self.index(dataset, artifact).get(shard)
            if entry is None or entry.problem:
                if entry is not None:
                    raise ManifestError(entry.problem)
                return None
            if entry.resolved is None and entry.committed:
                entry.resolved = self.resolve(entry.manifest())  # type: ignore[arg-type]
            return entry.resolved
        try:
            return self.read_manifest_at(self.manifest_path(dataset, artifact, shard))
        except FileNotFoundError:
            return None

    def input_ref(self, dataset: str, artifact: str, shard: int | None) -> InputRef | None:
        """``read_manifest(...).as_input()`` (None when the part is not committed), for a unit naming a committed
        part as its input.

        Through the index the reference comes straight from the snapshot's columns (uri, digest: what the
        manifest says, as the index vouches for it), without reading the generation's manifests file or parsing
        a manifest: building the units of a fully-cached re-run does this for every input of every unit."""
        if not self.use_index:
            m = self.read_manifest(dataset, artifact, shard)
            return None if m is None else m.as_input()
        entry = self._committed_entry(dataset, artifact, shard)
        if entry is None:
            return None
        if entry.uri is None or entry.digest is None:  # a snapshot row without them: take the manifest's word
            return self.read_manifest(dataset, artifact, shard).as_input()  # type: ignore[union-attr]
        return InputRef(dataset=dataset, artifact=artifact, shard=shard, uri=self.absolute(entry.uri), digest=entry.digest)

    def committed_rows(self, dataset: str, artifact: str, shard: int | None) -> int | None:
        """The row count a part's manifest records (None when the part is not committed); from the index's
        columns when reading through it."""
        if not self.use_index:
            m = self.read_manifest(dataset, artifact, shard)
            return None if m is None else m.rows
        entry = self._committed_entry(dataset, artifact, shard)
        return None if entry is None else entry.rows

    def _committed_entry(self, dataset: str, artifact: str, shard: int | None) -> "_index.PartEntry | None":
        """The index entry of a committed part (None when not committed); an unreadable manifest raises."""
        entry = self.index(dataset, artifact).get(shard)
        if entry is None or not entry.has_manifest:
            return None
        if entry.problem:
            raise ManifestError(entry.problem)
        return entry

    def read_manifest_at(self, manifest_path: str) -> Manifest:
        data = self.read_bytes(manifest_path)
        try:
            return self.resolve(Manifest.from_json(data))
        except ValueError as err:
            raise ManifestError(f"unreadable manifest {self.uri(manifest_path)}: {str(err).splitlines()[0]}; "
                                f"re-run the stage that made it (python -m pipelines status shows the unit)") from None

    # Manifests name files relative to the store root, so a copied or moved store stays self-consistent;
    # in memory they carry full URIs under *this* root. Manifests written with absolute URIs (before
    # relative ones) read unchanged.

    def relative(self, uri: str) -> str:
        for prefix in (self.root_uri.rstrip("/") + "/", self.root.rstrip("/") + "/"):
            if uri.startswith(prefix):
                return uri[len(prefix):]
        return uri

    def absolute(self, uri: str) -> str:
        return under_root(self.root_base, uri)

    def _map_uris(self, m: Manifest, fn) -> Manifest:
        ing = m.ingredients
        # Model sources stay as given: they may be hub ids or names ("tiny", "reference"), not store paths.
        inputs = [i.model_copy(update={"uri": fn(i.uri)}) for i in ing.inputs]
        return m.model_copy(update={"uri": fn(m.uri), "ingredients": ing.model_copy(update={"inputs": inputs})})

    def resolve(self, m: Manifest) -> Manifest:
        """``m`` with its URIs under this root, changed in place (callers pass a manifest they just parsed:
        copying costs more than the parse, and the orchestrator resolves one per unit)."""
        # __dict__: plain attribute stores, skipping pydantic's per-assignment hook (measurable per unit)
        m.__dict__["uri"] = self.absolute(m.uri)
        for ref in m.ingredients.inputs:
            ref.__dict__["uri"] = self.absolute(ref.uri)
        return m

    def committed_shards(self, dataset: str, artifact: str) -> list[int]:
        """Shard indices of ``artifact`` that have a manifest, in order."""
        if self.use_index:
            return self.index(dataset, artifact).committed()
        d = self.artifact_dir(dataset, artifact)
        try:
            names = [posixpath.basename(p) for p in self.fs.ls(d, detail=False, refresh=True)]
        except FileNotFoundError:
            return []
        return sorted(int(n[6:11]) for n in names if n.startswith("shard-") and n.endswith(".manifest.json"))

    def failed_shards(self, dataset: str, artifact: str) -> dict[int, dict[str, Any]]:
        if self.use_index:
            return {p: f for p, f in self.index(dataset, artifact).failed().items() if p is not None}
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
        if self.use_index:
            indexed = _index.indexed_artifacts(self, dataset)
            if indexed:
                self.preload(dataset, indexed)
                return [a for a in indexed if any(e.has_manifest for e in self._indexes[(dataset, a)].entries.values())]
            # a store written before the index existed: find the artifacts once (their indexes bootstrap)
        base = self.path(dataset)
        try:
            found = self.fs.find(base, withdirs=False)
        except FileNotFoundError:
            return []
        arts = {posixpath.relpath(posixpath.dirname(p), base) for p in found if p.endswith("manifest.json")}
        return sorted(a for a in arts if not a.startswith("_"))

    # --------------------------------------------------------------------------------------- tables

    def read_table(self, dataset: str, artifact: str, shard: int | None, columns: list[str] | None = None,
                   verify: bool = False, missing_ok: bool = False) -> pa.Table:
        """Read a committed Parquet part; only committed (manifested) parts are readable.

        ``columns``: only these (the others are not decoded); with ``missing_ok`` those the part lacks are
        left out instead of failing the read (parts written before a column existed)."""
        manifest = self.read_manifest(dataset, artifact, shard)
        if manifest is None:
            raise NotCommittedError(
                f"{self.uri(self.data_path(dataset, artifact, shard))} is not committed (no manifest); "
                f"run the stage that makes '{artifact}' for dataset '{dataset}'"
            )
        path = self.part_path(dataset, artifact, shard, uri=manifest.uri)
        data = self.read_bytes(path)
        if verify and sha256_bytes(data) != manifest.digest:
            raise DigestMismatchError(f"{self.uri(path)} does not match the digest in its manifest; "
                                      f"{self._redo(manifest)}")
        expected = manifest.main_bytes()
        if expected is not None and len(data) != expected:  # truncated or replaced: free to check here
            raise CorruptPartError(f"{self.uri(path)} has {len(data)} bytes but its manifest records {expected} "
                                   f"(truncated or replaced); {self._redo(manifest)}")
        try:
            # a BufferReader reads the bytes in place; through io.BytesIO Arrow copies them in Python-sized
            # reads (4x the CPU for a 180 MB T5 label shard)
            if columns is not None and missing_ok:
                parquet = pq.ParquetFile(pa.BufferReader(data))
                names = set(parquet.schema_arrow.names)
                return parquet.read(columns=[c for c in columns if c in names])
            return pq.read_table(pa.BufferReader(data), columns=columns)
        except (pa.ArrowInvalid, OSError) as err:
            raise CorruptPartError(f"{self.uri(path)} is not readable Parquet ({err}); {self._redo(manifest)}") from None

    def _redo(self, m: Manifest) -> str:
        from .rerun import rerun_commands

        return f"re-make it with: {rerun_commands(m.dataset, m.ingredients.stage, m.shard, self.root_uri)[0]}"

    def size_of(self, uri: str) -> int | None:
        """Bytes of the file at ``uri`` under this store (one HEAD on S3), None when it is missing."""
        path = uri.split("://", 1)[1] if "://" in uri else uri
        try:
            return int(self.fs.size(path))
        except FileNotFoundError:
            return None

    def data_intact(self, m: Manifest) -> bool:
        """The cheap integrity check of the cached path: the main data file exists with the committed size."""
        expected = m.main_bytes()
        if expected is None:
            return True
        if m.shard is None:
            return self.size_of(m.uri) == expected
        if self.use_index:
            return self.data_sizes(m.dataset, m.artifact).get(m.shard) == expected
        return self.size_of(self.part_path(m.dataset, m.artifact, m.shard, uri=m.uri)) == expected

    def data_sizes(self, dataset: str, artifact: str) -> dict[int, int]:
        """shard -> bytes of every ``shard-NNNNN.parquet`` of an artifact, from one listing (cached per store
        like the indexes): the cached check's size comparison without one request per unit. Waits for the
        listing when :meth:`preload_sizes` started it in the background."""
        key = ("sizes", dataset, artifact)
        if key not in self._sizes:
            pending = self._sizes_pending.pop(key, None)
            self._sizes[key] = pending.result() if pending is not None else self._list_sizes(dataset, artifact)
        return self._sizes[key]

    def _list_sizes(self, dataset: str, artifact: str) -> dict[int, int]:
        """shard -> bytes of the main data files: one listing of ``<artifact>/data/``, plus one of ``<artifact>/``
        only while parts there are in the old layout (the index says which; without the index, both folders)."""
        folder = self.artifact_dir(dataset, artifact)
        sizes = self._folder_sizes(posixpath.join(folder, DATA_DIR))
        old_parts = self._old_layout_parts(dataset, artifact)
        if old_parts is None:  # no index to ask: the old folder fills in what data/ lacks
            return {**self._folder_sizes(folder), **sizes}
        if old_parts:
            old = self._folder_sizes(folder)
            for part in old_parts:  # a part's size is its own layout's file (never a stale file of the other)
                if part in old:
                    sizes[part] = old[part]
                else:
                    sizes.pop(part, None)
        return sizes

    def _old_layout_parts(self, dataset: str, artifact: str) -> list[int] | None:
        """Committed parts of the artifact whose manifest names a file beside it (the old layout); None when
        this store does not read through the index."""
        if not self.use_index:
            return None
        return [p for p, e in self.index(dataset, artifact).entries.items()
                if p is not None and e.has_manifest and (e.uri is None or not in_data_dir(dataset, artifact, e.uri))]

    def _folder_sizes(self, folder: str) -> dict[int, int]:
        """shard -> bytes of the ``shard-NNNNN.parquet`` files directly in ``folder``, from one listing."""
        def data_file(name: str) -> bool:
            return len(name) == 19 and name.startswith("shard-") and name.endswith(".parquet")  # not .errors/.digests

        try:
            if self.is_local:  # stat only the data files (fsspec's ls stats every entry)
                with os.scandir(folder) as it:
                    return {int(e.name[6:11]): e.stat().st_size for e in it if data_file(e.name)}
            if (data := s3_data_sizes(self.fs, folder)) is not None:
                return data
            if (listed := s3_sizes(self.fs, folder)) is not None:
                return {int(name[6:11]): size for name, size in listed.items() if data_file(name)}
            sizes = {}
            for info in self.fs.ls(folder, detail=True, refresh=True):
                name = posixpath.basename(info["name"])
                if data_file(name):
                    sizes[int(name[6:11])] = int(info["size"])
            return sizes
        except FileNotFoundError:
            return {}

    def preload_sizes(self, dataset: str, artifacts: Iterable[str], wait: bool = True) -> None:
        """List several artifacts' folders at once for :meth:`data_sizes` (on S3 each listing is a chain of
        1 000-key pages, so one artifact after another would add up their round trips).

        ``wait=False`` returns at once and leaves the listings running in background threads: the caller does
        its CPU work (building units, cache keys) while the store serves the listings, and :meth:`data_sizes`
        waits for each one when it is first asked for. A commit or :meth:`invalidate` drops a pending listing
        (it may predate the commit); the next ``data_sizes`` lists again."""
        todo = [a for a in dict.fromkeys(artifacts)
                if ("sizes", dataset, a) not in self._sizes and ("sizes", dataset, a) not in self._sizes_pending]
        if not todo or (wait and len(todo) == 1):
            for a in todo:
                self.data_sizes(dataset, a)
            return
        pool = ThreadPoolExecutor(min(8, len(todo)), thread_name_prefix="size-listing")
        for a in todo:
            self._sizes_pending[("sizes", dataset, a)] = pool.submit(self._list_sizes, dataset, a)
        pool.shutdown(wait=wait)  # without waiting, its threads end once the listings are done
        if wait:
            for a in todo:
                self.data_sizes(dataset, a)

    def read_errors(self, dataset: str, artifact: str, shard: int | None) -> pa.Table | None:
        m = self.read_manifest(dataset, artifact, shard)
        if m is None:
            return None
        path = self.part_path(dataset, artifact, shard, ".errors.parquet", uri=m.uri)
        if not self.exists(path):
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
        # The index's journal mark comes before anything changes, its pair after the last change (index.py).
        nonce = _index.write_mark(self, dataset, artifact, shard, "open")
        had_manifest, old_files = self._previous_part(dataset, artifact, shard)  # old files: deleted at the end
        if had_manifest:  # an old manifest must not vouch for new bytes (a first commit sends no DELETE for it)
            self.remove(self.manifest_path(dataset, artifact, shard))
        paths = {suffix: self.data_path(dataset, artifact, shard, suffix) for suffix in files}
        self.write_files({paths[suffix]: data for suffix, data in files.items()})
        entries = [FileEntry(name=posixpath.basename(paths[suffix]), digest=sha256_bytes(data), bytes=len(data))
                   for suffix, data in files.items()]
        main_path = self.data_path(dataset, artifact, shard, main)
        manifest = Manifest(
            **manifest_fields,
            uri=self.uri(main_path),
            digest=sha256_bytes(files[main]),
            files=entries,
        )
        if before_manifest is not None:
            before_manifest()
        on_disk = self._map_uris(manifest, self.relative)
        self.write_bytes(self.manifest_path(dataset, artifact, shard), on_disk.to_json().encode())
        self.remove(self.failure_path(dataset, artifact, shard))
        for path in old_files:  # the re-made part's files in the old layout: nothing vouches for them now
            self.remove(path)
        self._sizes.pop(("sizes", dataset, artifact), None)
        self._sizes_pending.pop(("sizes", dataset, artifact), None)
        _index.write_mark(self, dataset, artifact, shard, "done", nonce)
        self._indexes.pop((dataset, artifact), None)
        return manifest

    def _previous_part(self, dataset: str, artifact: str, shard: int | None) -> tuple[bool, list[str]]:
        """Whether the part has a manifest before this commit, and the files of that manifest when they are in
        the old layout (a re-made part's commit deletes them after writing its new manifest; a crash in between
        leaves them unreferenced, harmless). One read of the manifest answers both; the unsharded part (shard
        None) is not read and counts as having one (its manifest is then removed unconditionally, as always)."""
        if shard is None:
            return True, []
        try:
            raw = json.loads(self.read_bytes(self.manifest_path(dataset, artifact, shard)))
            if in_data_dir(dataset, artifact, raw["uri"]):
                return True, []
            names = [f["name"] for f in raw["files"]]
        except FileNotFoundError:
            return False, []
        except (ValueError, KeyError, TypeError):  # an unreadable manifest: the old layout's usual files
            names = [f"{part_name(shard)}.parquet", f"{part_name(shard)}.errors.parquet"]
        return True, [self.path(dataset, artifact, posixpath.basename(n)) for n in names]

    def record_failure(self, dataset: str, artifact: str, shard: int | None, info: dict[str, Any]) -> None:
        nonce = _index.write_mark(self, dataset, artifact, shard, "open")
        self.write_bytes(self.failure_path(dataset, artifact, shard), json.dumps(info, indent=2, default=str).encode())
        _index.write_mark(self, dataset, artifact, shard, "done", nonce)
        self._indexes.pop((dataset, artifact), None)

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
