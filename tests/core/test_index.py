"""The index of committed parts (fourm_core.index): exact against the manifests, compacts, and survives
real SIGKILLs at any point of a commit, on local disk and on the S3 test server."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from fourm_core import ArtifactStore, Unit, UnitOutput, run_unit
from fourm_core import index as ix

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_margin(monkeypatch):
    # One host, one clock, read-after-write stores: compaction may fold marks at once (see index.py).
    monkeypatch.setattr(ix, "MARGIN_US", 0)


def _commit(store: ArtifactStore, shard: int, i: int, fail: bool = False):
    unit = Unit(stage="t", dataset="d", artifacts=["a"], shard=shard, code_version="t/1", config={"i": i})

    def compute() -> UnitOutput:
        if fail:
            raise RuntimeError("boom")
        return UnitOutput({"a": pa.table({"sample_key": [f"k{i}"], "v": [i]})})

    return run_unit(store, unit, compute, force=True, raise_on_failure=False)


def _parts(store_root: str, options, dataset: str, artifact: str, use_index: bool) -> dict:
    """shard -> (cache_key, digest, failed?, input ref): from the manifests and failure records themselves
    (``use_index=False``, the truth) or through the index (input refs from the snapshot's columns)."""
    s = ArtifactStore(store_root, options, use_index=use_index)
    failed = s.failed_shards(dataset, artifact)
    out = {}
    for shard in sorted(set(s.committed_shards(dataset, artifact)) | set(failed)):
        m = s.read_manifest(dataset, artifact, shard)
        out[shard] = (m.cache_key if m else None, m.digest if m else None, shard in failed,
                      s.input_ref(dataset, artifact, shard))
    return out


def _truth(store_root: str, options, dataset: str, artifact: str) -> dict:
    return _parts(store_root, options, dataset, artifact, use_index=False)


def _indexed(store_root: str, options, dataset: str, artifact: str) -> dict:
    return _parts(store_root, options, dataset, artifact, use_index=True)


def test_index_matches_manifests_and_compacts(store_root):
    store = ArtifactStore(store_root)
    for shard in range(4):
        _commit(store, shard, shard)
    first = ix.load_index(store, "d", "a")
    assert first.bootstrapped and first.committed() == [0, 1, 2, 3]
    assert first.reread == 4  # no snapshot yet: every part is read from its manifest, once
    again = ix.load_index(store, "d", "a")
    assert again.reread == 0 and again.committed() == [0, 1, 2, 3]  # served from the compacted snapshot
    e = again.get(2)
    assert e.rows == 1 and e.manifest().cache_key == e.cache_key == store.read_manifest("d", "a", 2).cache_key

    _commit(store, 2, 20)  # re-commit: the marks make exactly that part re-read
    _commit(store, 3, 30, fail=True)  # a failure record after the commit: failed, manifest still listed
    third = ix.load_index(store, "d", "a")
    assert third.reread == 2
    assert third.get(2).cache_key == store.read_manifest("d", "a", 2).cache_key
    assert 3 in third.failed() and "boom" in third.failed()[3]["error"]
    assert _indexed(store_root, None, "d", "a") == _truth(store_root, None, "d", "a")


def test_input_ref_from_the_index_is_the_manifests_as_input(store_root, tmp_path):
    """Units name their inputs with store.input_ref: through the index from the snapshot's columns (no manifest
    parsed), equal to read_manifest(...).as_input() for parts from the snapshot, from journal marks, and in a
    copied store (relative URIs resolve under the copy's root)."""
    import shutil

    store = ArtifactStore(store_root)
    for shard in range(3):
        _commit(store, shard, shard)
    ix.load_index(store, "d", "a")  # a snapshot: parts 0-2 are served from it
    _commit(store, 1, 10)  # re-committed after the snapshot: from the journal marks
    _commit(store, 3, 3)
    _commit(store, 4, 4, fail=True)  # failed, never committed

    def refs(root: str) -> dict:
        plain, view = ArtifactStore(root), ArtifactStore(root, use_index=True)
        out = {}
        for shard in range(6):
            m = plain.read_manifest("d", "a", shard)
            ref = view.input_ref("d", "a", shard)
            assert ref == (m.as_input() if m else None), shard
            assert view.committed_rows("d", "a", shard) == (m.rows if m else None)
            out[shard] = ref
        return out

    here = refs(store_root)
    assert here[4] is None and here[5] is None and here[1].digest != here[0].digest
    assert here[1].uri == store.uri(store.data_path("d", "a", 1))
    copy = str(tmp_path / "copy")
    shutil.copytree(store_root, copy)
    there = refs(copy)
    assert there[2].uri.startswith(copy) and there[2].digest == here[2].digest
    # an unreadable manifest: the same error as read_manifest, naming the file
    bad = Path(store.manifest_path("d", "a", 2))
    bad.write_text("{not json")
    ix.rebuild(store, "d", "a")
    view = ArtifactStore(store_root, use_index=True)
    from fourm_core.store import ManifestError

    with pytest.raises(ManifestError, match="shard-00002.manifest.json"):
        view.input_ref("d", "a", 2)


def test_index_is_rebuilt_from_manifests(store_root):
    """The index is only a cache: removing it (or a store written before it existed) loses nothing."""
    store = ArtifactStore(store_root)
    for shard in range(3):
        _commit(store, shard, shard)
    import shutil

    shutil.rmtree(Path(store_root) / "d" / "_index")
    view = ArtifactStore(store_root, use_index=True)
    assert view.artifacts("d") == ["a"] and view.committed_shards("d", "a") == [0, 1, 2]
    assert ix.load_index(view, "d", "a").bootstrapped is False  # the first load wrote a snapshot
    assert ix.rebuild(view, "d", "a").committed() == [0, 1, 2]


def test_unreadable_manifest_is_a_problem_not_an_abort(store_root):
    store = ArtifactStore(store_root)
    for shard in range(3):
        _commit(store, shard, shard)
    bad = Path(store.manifest_path("d", "a", 1))
    bad.write_text("{not json")
    ix.rebuild(store, "d", "a")
    view = ArtifactStore(store_root, use_index=True)
    assert view.committed_shards("d", "a") == [0, 2]
    problems = view.index("d", "a").problems()
    assert str(bad) in problems[1] and "unreadable manifest" in problems[1]


def _writer(root: str, options, margin_s: float = 0) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "FOURM_INDEX_MARGIN_S": str(margin_s)}
    args = [sys.executable, "-m", "tests.core.index_writer", root] + ([json.dumps(options)] if options else [])
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=str(REPO))


def _kill_loop(root: str, options, kills: int, margin_s: float = 0) -> None:
    """SIGKILL the writer at random moments while this process keeps loading (and compacting) the index;
    after each kill the index must say exactly what the manifests say."""
    rng = random.Random(7)
    for k in range(kills):
        proc = _writer(root, options, margin_s)
        assert proc.stdout.readline(), "the writer died before its first commit"
        deadline = time.monotonic() + rng.uniform(0.2, 1.2)
        while time.monotonic() < deadline:  # a concurrent compactor: snapshots are written mid-commit
            ix.load_index(ArtifactStore(root, options), "ix", rng.choice(["a", "b"]))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        for artifact in ("a", "b"):
            truth = _truth(root, options, "ix", artifact)
            assert truth, "nothing committed yet"
            assert _indexed(root, options, "ix", artifact) == truth, f"kill {k}, artifact {artifact}"
            # and once more from the snapshot that load just compacted
            assert _indexed(root, options, "ix", artifact) == truth


def test_sigkill_during_commits_leaves_index_exact(store_root):
    _kill_loop(store_root, None, kills=3)


def test_sigkill_during_commits_leaves_index_exact_on_s3(s3_root, monkeypatch):
    # MARGIN covers PUT latency: a mark's timestamp is taken before its PUT lands, which on a loaded machine can
    # be seconds later; margin 0 (the local-disk tests) would let a compactor's watermark pass an unlisted mark
    monkeypatch.setattr(ix, "MARGIN_US", 3_000_000)
    root, options = s3_root
    _kill_loop(root, options, kills=2, margin_s=3)


def test_manifests_file_is_read_lazily_and_falls_back_to_the_manifest(store_root):
    """status reads only the snapshot; the manifests file of an old generation may be gone by the time a reader
    asks for a manifest: it then reads that part's manifest itself."""
    store = ArtifactStore(store_root)
    for shard in range(3):
        _commit(store, shard, shard)
    ix.load_index(store, "d", "a")  # writes generation 1
    old_reader = ix.load_index(store, "d", "a")
    assert old_reader.reread == 0 and old_reader.get(1)._json is None  # nothing parsed or read yet
    for i in (10, 11):  # two more generations: generation 1's manifests file is collected
        _commit(store, 0, i)
        ix.load_index(store, "d", "a")
    folder = Path(ix.index_dir(store, "d", "a"))
    assert old_reader.manifests_name not in {p.name for p in folder.iterdir()}
    assert old_reader.get(1).manifest().cache_key == store.read_manifest("d", "a", 1).cache_key
