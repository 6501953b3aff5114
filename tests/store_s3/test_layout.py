"""The store layout: sharded parts' files in ``<artifact>/data/``, manifests beside the index marks' artifact
folder; parts committed before ``data/`` existed (the old layout: files beside the manifest) stay readable,
verified and cached; a mixed store works; re-making an old part moves it to ``data/`` and deletes its old files
after the new manifest; the size listing lists the old folder only while old parts remain. Local and on the
S3 test server."""

from __future__ import annotations

import json
import posixpath

import pyarrow as pa
import pytest

from fourm_core import ArtifactStore, SampleError, Unit, UnitOutput, UnitStatus, run_unit
from fourm_core.config import DatasetConfig
from fourm_core.lineage import parse_part
from fourm_core.stage import StageSpec
from fourm_core.store import CorruptPartError
from fourm_core.units import is_cached
from fourm_core.verify import verify_part
from pipelines.ops import lineage_text, open_part
from pipelines.planning import split_cached


@pytest.fixture(params=["local", "s3"])
def any_store(request, tmp_path):
    if request.param == "local":
        return ArtifactStore(str(tmp_path / "store"))
    root, options = request.getfixturevalue("s3_root")
    return ArtifactStore(root, options)


def _unit(shard: int, scale: int = 2) -> Unit:
    return Unit(stage="lay", dataset="ds", artifacts=["numbers"], shard=shard, code_version="1", config={"scale": scale})


def _compute(calls: list, shard: int, scale: int = 2):
    def fn() -> UnitOutput:
        calls.append(shard)
        return UnitOutput({"numbers": pa.table({"sample_key": [f"k{shard}-{i}" for i in range(40)],
                                                "value": [i * scale for i in range(40)]})},
                          errors=[SampleError(f"k{shard}-x", "decode_error", "truncated")])
    return fn


def _commit(store: ArtifactStore, shard: int, scale: int = 2, calls: list | None = None):
    res = run_unit(store, _unit(shard, scale), _compute(calls if calls is not None else [], shard, scale))
    assert res.status in (UnitStatus.DONE, UnitStatus.CACHED)
    return res


def _old_commit(store: ArtifactStore, monkeypatch, shard: int, scale: int = 2) -> None:
    """Commit as the code before ``data/`` did: every file of the part beside its manifest."""
    with monkeypatch.context() as m:
        m.setattr(ArtifactStore, "data_path", lambda self, d, a, s, suffix=".parquet":
                  self.path(d, a, f"data{suffix}") if s is None else self.old_data_path(d, a, s, suffix))
        assert _commit(store, shard, scale).status is UnitStatus.DONE


def _view(store: ArtifactStore) -> ArtifactStore:
    """A fresh reader through the index, as the orchestrator, status and lineage make theirs."""
    return ArtifactStore(store.root_uri, store.storage_options, use_index=True)


def _names(store: ArtifactStore, folder: str) -> set[str]:
    try:
        return {posixpath.basename(p.rstrip("/")) for p in store.fs.ls(folder, detail=False, refresh=True)}
    except FileNotFoundError:
        return set()


def _relative_uri(store: ArtifactStore, shard: int) -> str:
    return json.loads(store.read_bytes(store.manifest_path("ds", "numbers", shard)))["uri"]


@pytest.fixture
def listed(monkeypatch):
    """The folders the size listing lists (relative to the artifact folder: "." or "data")."""
    folders: list[str] = []
    real = ArtifactStore._folder_sizes

    def spy(self, folder):
        folders.append(posixpath.relpath(folder, self.artifact_dir("ds", "numbers")))
        return real(self, folder)

    monkeypatch.setattr(ArtifactStore, "_folder_sizes", spy)
    return folders


def _size(store: ArtifactStore, path: str) -> int:
    return len(store.read_bytes(path))


def test_new_commits_put_data_files_in_their_own_folder(any_store, listed):
    store = any_store
    m = _commit(store, 0).manifests[0]
    assert _relative_uri(store, 0) == "ds/numbers/data/shard-00000.parquet"
    assert m.uri == store.uri(store.data_path("ds", "numbers", 0))
    art = store.artifact_dir("ds", "numbers")
    assert _names(store, posixpath.join(art, "data")) == {"shard-00000.parquet", "shard-00000.errors.parquet"}
    assert _names(store, art) == {"data", "shard-00000.manifest.json"}
    assert store.read_table("ds", "numbers", 0).num_rows == 40
    assert store.read_errors("ds", "numbers", 0).num_rows == 1
    assert verify_part(store, "ds", "numbers", 0).ok
    view = _view(store)
    assert is_cached(view, _unit(0)) is not None and listed == ["data"]  # the manifests' folder is not listed
    assert view.data_sizes("ds", "numbers") == {0: _size(store, store.data_path("ds", "numbers", 0))}
    assert parse_part(store, m.uri) == ("ds", "numbers", 0)
    assert open_part(m.uri, None, store.storage_options)[1].digest == m.digest
    assert "ds/numbers shard 0" in lineage_text(m.uri, None, store.storage_options)


def test_old_layout_parts_stay_readable_verified_and_cached(any_store, monkeypatch, listed):
    store = any_store
    for shard in (0, 1):
        _old_commit(store, monkeypatch, shard)
    assert _relative_uri(store, 0) == "ds/numbers/shard-00000.parquet"
    old = store.old_data_path("ds", "numbers", 1)
    assert store.part_path("ds", "numbers", 1) == old and _view(store).part_path("ds", "numbers", 1) == old
    assert store.read_table("ds", "numbers", 1).num_rows == 40
    assert store.read_errors("ds", "numbers", 1).num_rows == 1
    assert verify_part(store, "ds", "numbers", 1).ok
    uri = store.uri(old)
    assert parse_part(store, uri) == ("ds", "numbers", 1)
    assert "ds/numbers shard 1" in lineage_text(uri, None, store.storage_options)
    # a re-run finds them cached (no recompute, no new layout) and compares sizes with the old folder's files
    view, calls = _view(store), []
    assert run_unit(view, _unit(1), _compute(calls, 1)).status is UnitStatus.CACHED and calls == []
    assert sorted(listed) == [".", "data"]
    assert view.data_sizes("ds", "numbers") == {s: _size(store, store.old_data_path("ds", "numbers", s)) for s in (0, 1)}
    # a truncated old-layout file is caught by the cached check and by verify
    store.write_bytes(old, store.read_bytes(old)[:100])
    assert is_cached(_view(store), _unit(1)) is None and is_cached(_view(store), _unit(0)) is not None
    assert any("100 bytes" in p for p in verify_part(store, "ds", "numbers", 1).problems)


def test_mixed_store_and_remaking_an_old_part(any_store, monkeypatch, listed):
    store = any_store
    for shard in (0, 1):
        _old_commit(store, monkeypatch, shard)
    _commit(store, 2)
    sizes = {0: _size(store, store.old_data_path("ds", "numbers", 0)),
             1: _size(store, store.old_data_path("ds", "numbers", 1)),
             2: _size(store, store.data_path("ds", "numbers", 2))}
    assert _view(store).data_sizes("ds", "numbers") == sizes
    assert all(is_cached(_view(store), _unit(s)) is not None for s in (0, 1, 2))
    # re-made with another config: written in data/, its old files deleted once the new manifest is in
    _commit(store, 0, scale=3)
    art = store.artifact_dir("ds", "numbers")
    assert _relative_uri(store, 0) == "ds/numbers/data/shard-00000.parquet"
    assert not {"shard-00000.parquet", "shard-00000.errors.parquet"} & _names(store, art)
    assert {"shard-00001.parquet", "shard-00001.errors.parquet"} <= _names(store, art)  # untouched
    assert store.read_table("ds", "numbers", 0).column("value").to_pylist()[:3] == [0, 3, 6]
    assert all(verify_part(_view(store), "ds", "numbers", s).ok for s in (0, 1, 2))
    view = _view(store)
    assert view.data_sizes("ds", "numbers")[0] == _size(store, store.data_path("ds", "numbers", 0))
    assert is_cached(view, _unit(0, scale=3)) is not None and is_cached(view, _unit(1)) is not None
    # once no old part is left, only data/ is listed
    _commit(store, 1, scale=3)
    listed.clear()
    view = _view(store)
    assert is_cached(view, _unit(1, scale=3)) is not None and listed == ["data"]
    assert sorted(view.data_sizes("ds", "numbers")) == [0, 1, 2]


def test_a_truncated_data_file_in_data_folder_is_caught(any_store):
    store = any_store

    def units(store, config, shard):
        return [_unit(shard)]

    config = DatasetConfig.model_validate({"name": "ds", "sources": [{"kind": "synthetic", "n_samples": 3}]})
    spec = StageSpec(name="lay", plan_shards=lambda store, cfg: [0, 1, 2], run_shard=lambda *a, **k: [],
                     artifacts=("numbers",), shard_units=units)
    for shard in (0, 1, 2):
        _commit(store, shard)
    assert split_cached(_view(store), spec, config, [0, 1, 2], force=False)[1] == []
    path = store.data_path("ds", "numbers", 1)
    store.write_bytes(path, store.read_bytes(path)[:100])
    cached, to_run = split_cached(_view(store), spec, config, [0, 1, 2], force=False)
    assert to_run == [1] and sorted(s["shard"] for s in cached) == [0, 2]
    problems = verify_part(store, "ds", "numbers", 1).problems
    assert problems and "data/shard-00001.parquet: 100 bytes" in problems[0]
    with pytest.raises(CorruptPartError, match="data/shard-00001.parquet has 100 bytes"):
        store.read_table("ds", "numbers", 1)
    calls: list = []
    assert run_unit(_view(store), _unit(1), _compute(calls, 1)).status is UnitStatus.DONE and calls == [1]
    assert verify_part(store, "ds", "numbers", 1).ok


def test_layout_is_read_from_the_uri_relative_or_absolute():
    """A manifest's URI says the layout: relative (today), absolute from another root (manifests written before
    relative URIs, or a copied store), and an artifact that is itself named ``data``."""
    from fourm_core.store import in_data_dir

    assert in_data_dir("ds", "labels/depth", "ds/labels/depth/data/shard-00001.parquet")
    assert not in_data_dir("ds", "labels/depth", "ds/labels/depth/shard-00001.parquet")
    assert in_data_dir("ds", "images", "s3://b/elsewhere/ds/images/data/shard-00001.parquet")
    assert not in_data_dir("ds", "images", "/old/root/ds/images/shard-00001.parquet")
    assert not in_data_dir("ds", "data", "ds/data/shard-00001.parquet")  # old layout of an artifact named data
    assert in_data_dir("ds", "data", "ds/data/data/shard-00001.parquet")
    store = ArtifactStore("/tmp/here")
    assert store.part_path("ds", "images", 1, ".errors.parquet", uri="/old/root/ds/images/shard-00001.parquet") == \
        "/tmp/here/ds/images/shard-00001.errors.parquet"
    assert store.part_path("ds", "images", 1, uri="ds/images/data/shard-00001.parquet") == \
        "/tmp/here/ds/images/data/shard-00001.parquet"
    assert store.part_path("ds", "ckpt", None, ".safetensors") == "/tmp/here/ds/ckpt/data.safetensors"


def test_size_listing_takes_only_the_main_data_file(any_store):
    """A part's sibling files (errors, ingest's digests) are larger or smaller than its data file: the size
    compared with the manifest is the main file's, whatever order the listing returns them in (S3 lists by name:
    ".digests" before and ".weights" after the main file)."""
    store = any_store
    _commit(store, 0)
    for suffix, size in ((".digests.parquet", 7), (".weights.parquet", 100_000)):
        store.write_bytes(store.data_path("ds", "numbers", 0, suffix), b"x" * size)
    view = _view(store)
    assert view.data_sizes("ds", "numbers") == {0: _size(store, store.data_path("ds", "numbers", 0))}
    assert is_cached(view, _unit(0)) is not None
