"""A compacted, rebuildable index of the committed parts of each artifact (a cache of manifests).

Why: ``status``, the orchestrator's cached check and planning used to read one manifest per unit; on S3 that
is one GET (5-7 ms) per unit, about half an hour at 300 000 units. The index answers them with one snapshot
read and one small listing per artifact, however many units are committed.

Layout, beside the dataset's artifacts (``store.artifacts`` skips ``_``-folders)::

    <root>/<dataset>/_index/<artifact>/snapshot.parquet     one row per part as of watermark W
    <root>/<dataset>/_index/<artifact>/marks/<bucket>/<ts>-<part>-<nonce>.open|.done

The manifest stays the truth; the index only says *which parts to believe without a GET*:

* Every mutation of a part's manifest or failure record (``ArtifactStore.commit``, ``record_failure``) is
  bracketed by two journal marks with one nonce: ``.open`` before the first change, ``.done`` after the
  last (timestamps ``ts`` in microseconds, taken when the mark is written).
* A reader loads the snapshot (parts as of W), lists the marks newer than W (only the time buckets at or
  after W: a handful of keys), and re-reads the manifest and failure record of every part they name
  (the truth). Parts no mark names are served from the snapshot.
* A crash between data, manifest and marks therefore leaves nothing half-visible: an ``.open`` without
  its ``.done`` keeps its part re-read from the manifest on every load, so the snapshot is never believed
  for a part whose manifest may have changed.
* Compaction: a reader that re-read parts writes a new snapshot with watermark
  ``W' = min(listing time - MARGIN, oldest unmatched young .open - 1)`` and deletes mark buckets that ended
  more than ``GC_DELAY`` before W'. ``MARGIN`` covers clock skew between writers and PUT latency;
  an ``.open`` older than ``OPEN_TTL`` with no ``.done`` is a crashed commit and no longer holds W back
  (its part was re-read after its writer died). A compactor that took longer than ``MAX_COMPACT_SECONDS``
  does not write (a stale snapshot must not replace a newer one long after; GC_DELAY covers the rest).
* No snapshot yet (a new artifact, or a store written before the index existed): built from a listing of
  the artifact's folder plus one manifest read per part, once. ``python -m pipelines index DATASET --rebuild``
  rebuilds every snapshot from the manifests.

Assumptions (documented in docs/architecture.md): writers' clocks within ``MARGIN`` of each other, and
no single commit stalled for longer than ``OPEN_TTL`` between its two marks.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from .gcpause import gc_paused
from .manifest import Manifest

if TYPE_CHECKING:
    from .store import ArtifactStore

INDEX_DIR = "_index"
# Clock skew + PUT latency between writers. Tests on one host (one clock, read-after-write stores) set
# FOURM_INDEX_MARGIN_S=0 so that compaction happens within a test's lifetime.
MARGIN_US = int(float(os.environ.get("FOURM_INDEX_MARGIN_S", "60")) * 1_000_000)
OPEN_TTL_US = 10 * 60 * 1_000_000  # an .open older than this without .done is a crashed commit
GC_DELAY_US = 30 * 60 * 1_000_000  # mark buckets are deleted this long after the watermark passed them
BUCKET_US = 10 * 60 * 1_000_000  # marks are grouped in 10-minute folders so readers list only recent ones
MAX_COMPACT_SECONDS = 120.0
READ_THREADS = 16  # parallel truth reads (GETs) of re-read parts

WHOLE = -1  # the part number of an unsharded artifact (tokenizer, checkpoint) in the snapshot

MANIFESTS_SCHEMA = pa.schema([("part", pa.int32()), ("manifest", pa.string())])
SNAPSHOT_SCHEMA = pa.schema([
    ("part", pa.int32()), ("cache_key", pa.string()), ("digest", pa.string()), ("rows", pa.int64()),
    ("errors", pa.int64()), ("seconds", pa.float64()), ("stage", pa.string()), ("data_bytes", pa.int64()),
    ("uri", pa.string()), ("has_manifest", pa.bool_()), ("failure", pa.string()), ("problem", pa.string()),
])


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class PartEntry:
    """What the index knows about one part: its manifest (JSON, parsed on demand), its failure record, and
    ``problem`` when the manifest exists but cannot be read (status shows it with the manifest's path)."""

    part: int | None
    has_manifest: bool = False
    failure_json: str | None = None
    problem: str | None = None
    cache_key: str | None = None
    digest: str | None = None
    rows: int = 0
    errors: int = 0
    seconds: float = 0.0
    stage: str | None = None
    data_bytes: int | None = None
    uri: str | None = None
    _json: str | None = field(default=None, repr=False)
    _lazy: "ManifestsFile | None" = field(default=None, repr=False)  # where the JSON is, read on first use
    _manifest: Manifest | None = field(default=None, repr=False)
    resolved: Manifest | None = field(default=None, repr=False)  # with URIs under the reading store's root

    @property
    def manifest_json(self) -> str | None:
        if self._json is None and self._lazy is not None:
            self._json = self._lazy.get(self.part)
        return self._json

    @property
    def committed(self) -> bool:
        return self.has_manifest and self.problem is None

    def manifest(self) -> Manifest | None:
        if self._manifest is None and self.committed:
            self._manifest = Manifest.from_json(self.manifest_json)  # type: ignore[arg-type]
        return self._manifest

    def failure(self) -> dict[str, Any] | None:
        return json.loads(self.failure_json) if self.failure_json else None

    @classmethod
    def from_truth(cls, part: int | None, manifest_bytes: bytes | None, failure_bytes: bytes | None,
                   manifest_path: str) -> "PartEntry":
        entry = cls(part=part, failure_json=failure_bytes.decode("utf-8", "replace") if failure_bytes else None)
        if manifest_bytes is None:
            return entry
        text = manifest_bytes.decode("utf-8", "replace")
        entry.has_manifest, entry._json = True, text
        try:
            m = Manifest.from_json(text)
        except Exception as err:  # noqa: BLE001 - any parse/validation error: report the file, keep going
            entry.problem = f"unreadable manifest {manifest_path}: {type(err).__name__}: {_first_line(err)}"
            return entry
        entry._manifest = m
        entry.cache_key, entry.digest, entry.rows, entry.errors = m.cache_key, m.digest, m.rows, m.errors.count
        entry.seconds, entry.stage, entry.uri = m.timings.seconds, m.ingredients.stage, m.uri
        entry.data_bytes = m.main_bytes()
        return entry

    def row(self) -> dict[str, Any]:
        return {"part": WHOLE if self.part is None else self.part, "cache_key": self.cache_key, "digest": self.digest,
                "rows": self.rows, "errors": self.errors, "seconds": self.seconds, "stage": self.stage,
                "data_bytes": self.data_bytes, "uri": self.uri, "has_manifest": self.has_manifest,
                "failure": self.failure_json, "problem": self.problem}

    @classmethod
    def from_snapshot(cls, table: pa.Table, manifests: "ManifestsFile") -> list["PartEntry"]:
        """Entries of a snapshot table; their manifests are read from ``manifests`` when first asked for."""
        # One pass over the columns zipped, positional arguments in field order: a re-run loads one entry per
        # committed unit (300 000 at 10 000 shards), and indexing a dict of columns per field cost twice this.
        cols = [table.column(name).to_pylist() for name in _ENTRY_COLUMNS]
        return [cls(None if part == WHOLE else part, has, failure, problem, key, digest, rows or 0, errors or 0,
                    seconds or 0.0, stage, size, uri, None, manifests if has else None)
                for part, has, failure, problem, key, digest, rows, errors, seconds, stage, size, uri in zip(*cols)]


# Snapshot columns in PartEntry's field order (from_snapshot passes them positionally).
_ENTRY_COLUMNS = ("part", "has_manifest", "failure", "problem", "cache_key", "digest", "rows", "errors", "seconds",
                  "stage", "data_bytes", "uri")


class ManifestsFile:
    """The manifests (JSON) of one snapshot generation, in their own file beside the snapshot: ``status`` and
    the cached check read only the small snapshot; the first ``read_manifest`` of an artifact reads this.
    If a later compaction already removed it, each part falls back to its manifest (one GET)."""

    def __init__(self, store: "ArtifactStore", dataset: str, artifact: str, name: str | None):
        self.store, self.dataset, self.artifact, self.name = store, dataset, artifact, name
        self._by_part: dict[int | None, str] | None = None
        self._lock = threading.Lock()

    def get(self, part: int | None) -> str | None:
        with self._lock:
            if self._by_part is None:
                self._by_part = {}
                data = _read_optional(self.store, posixpath.join(index_dir(self.store, self.dataset, self.artifact),
                                                                 self.name)) if self.name else None
                if data is not None:
                    t = pq.read_table(io.BytesIO(data))
                    self._by_part = {None if p == WHOLE else p: m for p, m in
                                     zip(t.column("part").to_pylist(), t.column("manifest").to_pylist())}
        if part in self._by_part:
            return self._by_part[part]
        raw = _read_optional(self.store, self.store.manifest_path(self.dataset, self.artifact, part))
        return raw.decode("utf-8", "replace") if raw is not None else None


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else ""


# ------------------------------------------------------------------------------------------------- paths

def index_dir(store: "ArtifactStore", dataset: str, artifact: str) -> str:
    return store.path(dataset, INDEX_DIR, artifact)


def snapshot_path(store: "ArtifactStore", dataset: str, artifact: str) -> str:
    return posixpath.join(index_dir(store, dataset, artifact), "snapshot.parquet")


def marks_dir(store: "ArtifactStore", dataset: str, artifact: str) -> str:
    return posixpath.join(index_dir(store, dataset, artifact), "marks")


def _part_token(part: int | None) -> str:
    return "whole" if part is None else f"{part:05d}"


def _parse_mark(name: str) -> tuple[int, int | None, str, str] | None:
    """(ts, part, nonce, kind) of a mark file name, or None for anything else."""
    stem, _, kind = name.rpartition(".")
    bits = stem.split("-")
    if kind not in ("open", "done") or len(bits) != 3 or not bits[0].isdigit():
        return None
    part = None if bits[1] == "whole" else int(bits[1])
    return int(bits[0]), part, bits[2], kind


# -------------------------------------------------------------------------------------------- journal

def write_mark(store: "ArtifactStore", dataset: str, artifact: str, part: int | None, kind: str,
               nonce: str | None = None) -> str:
    """Write one journal mark (``open`` before a part's manifest/failure record changes, ``done`` after);
    returns its nonce. The timestamp is taken now, i.e. after everything the mark follows."""
    nonce = nonce or uuid.uuid4().hex[:12]
    ts = now_us()
    bucket = f"{ts // BUCKET_US:012d}"
    path = posixpath.join(marks_dir(store, dataset, artifact), bucket, f"{ts:017d}-{_part_token(part)}-{nonce}.{kind}")
    store.write_bytes(path, b"")
    return nonce


# ---------------------------------------------------------------------------------------------- reads

def _read_optional(store: "ArtifactStore", path: str) -> bytes | None:
    try:
        return store.read_bytes(path)
    except FileNotFoundError:
        return None


def read_truth(store: "ArtifactStore", dataset: str, artifact: str, parts: list[int | None]) -> dict[int | None, PartEntry]:
    """Entries for ``parts`` read from their manifests and failure records (the truth), in parallel."""
    def one(part: int | None) -> PartEntry:
        mpath = store.manifest_path(dataset, artifact, part)
        return PartEntry.from_truth(part, _read_optional(store, mpath),
                                    _read_optional(store, store.failure_path(dataset, artifact, part)), store.uri(mpath))

    if len(parts) <= 1:
        return {p: one(p) for p in parts}
    with ThreadPoolExecutor(min(READ_THREADS, len(parts))) as pool:
        return dict(zip(parts, pool.map(one, parts)))


def _ls(store: "ArtifactStore", path: str) -> list[str]:
    try:
        return [posixpath.basename(p.rstrip("/")) for p in store.fs.ls(path, detail=False, refresh=True)]
    except FileNotFoundError:
        return []


def _listed_parts(store: "ArtifactStore", dataset: str, artifact: str) -> list[int | None]:
    """Parts that have a manifest or a failure record, from a listing of the artifact's folder (bootstrap)."""
    parts: set[int | None] = set()
    for n in _ls(store, store.artifact_dir(dataset, artifact)):
        if n.startswith("shard-") and (n.endswith(".manifest.json") or n.endswith(".failed.json")):
            parts.add(int(n[6:11]))
        elif n in ("manifest.json", "failed.json"):
            parts.add(None)
    return sorted(parts, key=lambda p: -1 if p is None else p)


@dataclass
class ArtifactIndex:
    """The committed parts of one artifact, as the index and the journal say (see the module docstring)."""

    dataset: str
    artifact: str
    entries: dict[int | None, PartEntry]
    watermark: int
    reread: int = 0  # parts re-read from their manifests in this load (journal marks newer than the snapshot)
    bootstrapped: bool = False
    manifests_name: str | None = None  # the snapshot generation's manifests file

    def committed(self) -> list[int]:
        return sorted(p for p, e in self.entries.items() if p is not None and e.committed)

    def failed(self) -> dict[int | None, dict[str, Any]]:
        return {p: e.failure() or {} for p, e in self.entries.items() if e.failure_json}

    def problems(self) -> dict[int | None, str]:
        return {p: e.problem for p, e in self.entries.items() if e.problem}

    def get(self, part: int | None) -> PartEntry | None:
        return self.entries.get(part)


def load_index(store: "ArtifactStore", dataset: str, artifact: str, compact: bool = True) -> ArtifactIndex:
    """The artifact's parts: snapshot + journal marks newer than its watermark + truth reads of their parts."""
    with gc_paused():  # one entry per committed part, acyclic (fourm_core/gcpause.py)
        return _load_index(store, dataset, artifact, compact)


def _load_index(store: "ArtifactStore", dataset: str, artifact: str, compact: bool) -> ArtifactIndex:
    t_list = now_us()
    snap = _read_optional(store, snapshot_path(store, dataset, artifact))
    bootstrapped = snap is None
    entries: dict[int | None, PartEntry] = {}
    manifests_name = None
    if snap is None:
        watermark = t_list - MARGIN_US  # every commit finished before this is visible to the listing below
    else:
        table = pq.read_table(io.BytesIO(snap))
        meta = table.schema.metadata or {}
        watermark = int(meta.get(b"watermark", b"0"))
        manifests_name = meta.get(b"manifests", b"").decode() or None
        entries = {e.part: e for e in PartEntry.from_snapshot(table, ManifestsFile(store, dataset, artifact,
                                                                                    manifests_name))}
    marks = _marks_after(store, dataset, artifact, watermark)
    touched_set = {p for _, p, _, _ in marks}
    if bootstrapped:  # parts committed before the index existed have no marks: take them from a listing
        touched_set.update(_listed_parts(store, dataset, artifact))
    touched = sorted(touched_set, key=lambda p: -1 if p is None else p)
    for part, entry in read_truth(store, dataset, artifact, touched).items():
        if entry.manifest_json is None and entry.failure_json is None:
            entries.pop(part, None)
        else:
            entries[part] = entry
    index = ArtifactIndex(dataset, artifact, entries, watermark, len(touched), bootstrapped, manifests_name)
    if compact and (bootstrapped or touched):
        _compact(store, index, marks, t_list)
    return index


def _marks_after(store: "ArtifactStore", dataset: str, artifact: str, watermark: int) -> list[tuple[int, int | None, str, str]]:
    base = marks_dir(store, dataset, artifact)
    first = f"{watermark // BUCKET_US:012d}"
    out = []
    for bucket in sorted(b for b in _ls(store, base) if b.isdigit() and b >= first):
        for name in _ls(store, posixpath.join(base, bucket)):
            parsed = _parse_mark(name)
            if parsed and parsed[0] > watermark:
                out.append(parsed)
    return out


def _compact(store: "ArtifactStore", index: ArtifactIndex, marks: list[tuple[int, int | None, str, str]],
             t_list: int) -> None:
    """Write a new snapshot (watermark advanced past folded marks) and drop old mark buckets. Best effort:
    a read-only user or a failed write leaves the old snapshot, which stays correct with its marks."""
    done = {nonce for _, _, nonce, kind in marks if kind == "done"}
    young_open = [ts for ts, _, nonce, kind in marks if kind == "open" and nonce not in done
                  and ts > t_list - OPEN_TTL_US]
    new_w = t_list - MARGIN_US
    if young_open:
        new_w = min(new_w, min(young_open) - 1)
    new_w = max(new_w, index.watermark)
    if new_w == index.watermark and not index.bootstrapped:
        return
    if (now_us() - t_list) / 1e6 > MAX_COMPACT_SECONDS:
        return
    files = snapshot_files(store, index.dataset, index.artifact, list(index.entries.values()), new_w)
    try:
        for path, data in files:  # the manifests first, then the snapshot that names them
            store.write_bytes(path, data)
    except OSError:
        return
    folder = index_dir(store, index.dataset, index.artifact)
    manifests_name = posixpath.basename(files[0][0])
    # Keep the manifests file this load started from (readers of the previous snapshot may still want it).
    keep = {manifests_name, index.manifests_name}
    for name in _ls(store, folder):
        if name.startswith("manifests-") and name not in keep:
            store.remove(posixpath.join(folder, name))
    index.manifests_name = manifests_name
    index.watermark = new_w
    base = marks_dir(store, index.dataset, index.artifact)
    for bucket in _ls(store, base):
        if bucket.isdigit() and (int(bucket) + 1) * BUCKET_US < new_w - GC_DELAY_US:
            try:
                store.fs.rm(posixpath.join(base, bucket), recursive=True)
            except (FileNotFoundError, OSError):
                pass


def snapshot_files(store: "ArtifactStore", dataset: str, artifact: str, entries: list[PartEntry],
                   watermark: int) -> list[tuple[str, bytes]]:
    """(path, bytes) of a snapshot generation: its manifests file (a name of its own, so a concurrent compactor
    never overwrites it), then the snapshot naming it. Written in this order."""
    ordered = sorted(entries, key=lambda e: -1 if e.part is None else e.part)
    manifests_name = f"manifests-{uuid.uuid4().hex[:12]}.parquet"
    man = pa.Table.from_pylist([{"part": WHOLE if e.part is None else e.part, "manifest": e.manifest_json}
                                for e in ordered if e.has_manifest], schema=MANIFESTS_SCHEMA)
    table = pa.Table.from_pylist([e.row() for e in ordered], schema=SNAPSHOT_SCHEMA).replace_schema_metadata(
        {"watermark": str(watermark), "written": str(now_us()), "manifests": manifests_name})
    folder = index_dir(store, dataset, artifact)
    return [(posixpath.join(folder, manifests_name), _parquet(man)),
            (snapshot_path(store, dataset, artifact), _parquet(table))]


def _parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def indexed_artifacts(store: "ArtifactStore", dataset: str) -> list[str]:
    """Artifacts of ``dataset`` that have an index folder (every artifact committed since the index exists).
    One recursive listing of ``_index``: snapshots plus the marks not yet collected."""
    base = store.path(dataset, INDEX_DIR)
    try:
        found = store.fs.find(base, withdirs=False, detail=False)
    except FileNotFoundError:
        return []
    arts = set()
    for p in found:
        bits = posixpath.relpath(p, base).split("/")
        if "marks" in bits:
            arts.add("/".join(bits[:bits.index("marks")]))
        elif bits[-1] == "snapshot.parquet":
            arts.add("/".join(bits[:-1]))
    return sorted(a for a in arts if a)


def rebuild(store: "ArtifactStore", dataset: str, artifact: str) -> ArtifactIndex:
    """Throw the snapshot away and build it again from the manifests (the index is only a cache)."""
    store.remove(snapshot_path(store, dataset, artifact))
    return load_index(store, dataset, artifact)
