"""Integrity check of committed parts: re-read the data and compare it with what the manifest vouches for.

``python -m pipelines verify DATASET`` runs :func:`verify_part` over every committed part (in parallel
threads: the work is reading bytes). The cheap checks that run on every cached check and every read
(the main data file's size, in ``is_cached`` and ``read_table``) catch truncation; this one also catches
a file replaced by other bytes of the same size, a manifest whose rows or digests were edited, and a file
that is not Parquet at all.
"""

from __future__ import annotations

import io
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow.parquet as pq

from .manifest import sha256_bytes
from .store import ArtifactStore


@dataclass
class PartCheck:
    dataset: str
    artifact: str
    shard: int | None
    stage: str | None  # the unit's stage from its manifest (None when the manifest is unreadable)
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_part(store: ArtifactStore, dataset: str, artifact: str, shard: int | None) -> PartCheck:
    """Every file the manifest lists: present, same size, same sha256; the main file is Parquet (when it is
    named ``.parquet``) with the manifest's row count."""
    try:
        m = store.read_manifest(dataset, artifact, shard)
    except ValueError as err:  # ManifestError names the file
        return PartCheck(dataset, artifact, shard, None, [str(err)])
    if m is None:
        return PartCheck(dataset, artifact, shard, None, ["no manifest (not committed)"])
    problems = []
    # the files are beside the main file, in the layout the manifest records (<artifact>/data/ or the old one)
    folder = posixpath.dirname(store.part_path(dataset, artifact, shard, uri=m.uri))
    main = posixpath.basename(m.uri)
    for f in m.files:
        path = posixpath.join(folder, f.name)
        uri = store.uri(path)
        try:
            data = store.read_bytes(path)
        except FileNotFoundError:
            problems.append(f"{uri}: missing")
            continue
        digest = sha256_bytes(data)
        if len(data) != f.bytes:
            problems.append(f"{uri}: {len(data)} bytes, manifest records {f.bytes}")
        elif digest != f.digest or (f.name == main and digest != m.digest):
            problems.append(f"{uri}: sha256 differs from the manifest's")
        if f.name == main and f.name.endswith(".parquet"):
            try:
                rows = pq.read_metadata(io.BytesIO(data)).num_rows
                if rows != m.rows:
                    problems.append(f"{uri}: {rows} rows, manifest records {m.rows}")
            except Exception as err:  # noqa: BLE001 - any parse failure is the finding
                problems.append(f"{uri}: not readable Parquet ({type(err).__name__}: {err})")
    if main not in {f.name for f in m.files}:
        problems.append(f"{m.uri}: the manifest lists no entry for its main file")
    return PartCheck(dataset, artifact, shard, m.ingredients.stage, problems)


def verify_parts(store: ArtifactStore, parts: list[tuple[str, str, int | None]], threads: int = 8) -> list[PartCheck]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda p: verify_part(store, *p), parts))
