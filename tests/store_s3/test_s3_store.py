"""The commit protocol, cached units, failure records, lineage and status against a real S3 server.

SeaweedFS runs on 127.0.0.1 (session fixture ``s3_server``); s3fs and botocore are the real ones.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from fourm_core import ArtifactStore, NotCommittedError, SampleError, Unit, UnitOutput, UnitStatus, run_unit
from fourm_core.lineage import describe, lineage, shard_status
from pipelines.ops import dataset_status, lineage_text


def _unit(shard: int, artifact: str = "numbers", inputs=(), scale: int = 2) -> Unit:
    return Unit(stage="s3test", dataset="ds", artifacts=[artifact], shard=shard, code_version="1",
                config={"scale": scale}, inputs=list(inputs))


def _compute(calls: list, shard: int, scale: int = 2):
    def fn() -> UnitOutput:
        calls.append(shard)
        return UnitOutput({"numbers": pa.table({"sample_key": [f"k{shard}-{i}" for i in range(3)],
                                                "value": [i * scale for i in range(3)]})},
                          errors=[SampleError(f"k{shard}-x", "decode_error", "truncated")])
    return fn


@pytest.fixture
def s3_store(s3_root):
    root, options = s3_root
    return ArtifactStore(root, options)


def test_commit_is_readable_and_cached_on_s3(s3_store):
    calls: list = []
    first = run_unit(s3_store, _unit(0), _compute(calls, 0))
    assert first.status is UnitStatus.DONE and first.manifests[0].uri.startswith("s3://")
    # a different client (no shared listing cache) sees the committed shard and skips the work
    fresh = ArtifactStore(s3_store.root_uri, s3_store.storage_options)
    second = run_unit(fresh, _unit(0), _compute(calls, 0))
    assert second.status is UnitStatus.CACHED and calls == [0]
    assert fresh.read_table("ds", "numbers", 0, verify=True).column("value").to_pylist() == [0, 2, 4]
    assert fresh.read_errors("ds", "numbers", 0).column("reason").to_pylist() == ["decode_error"]
    assert run_unit(fresh, _unit(0, scale=3), _compute(calls, 0, 3)).status is UnitStatus.DONE


def test_part_without_manifest_is_invisible_on_s3(s3_store):
    run_unit(s3_store, _unit(1), _compute([], 1))
    s3_store.remove(s3_store.manifest_path("ds", "numbers", 1))  # as if the writer died before the manifest
    assert s3_store.exists(s3_store.data_path("ds", "numbers", 1))
    assert s3_store.committed_shards("ds", "numbers") == []
    with pytest.raises(NotCommittedError):
        s3_store.read_table("ds", "numbers", 1)
    assert run_unit(s3_store, _unit(1), _compute([], 1)).status is UnitStatus.DONE


def test_failure_record_status_and_clear_on_s3(s3_store):
    def boom() -> UnitOutput:
        raise RuntimeError("labeler exploded")

    ok = run_unit(s3_store, _unit(0), _compute([], 0))
    with pytest.raises(RuntimeError):
        run_unit(s3_store, _unit(1), boom)
    s3_store.write_run_record("ds", "run-1", {"units": [ok.summary()], "plan": {"s3test": [0, 1, 2]},
                                              "stage_artifacts": {"s3test": ["numbers"]}})
    rows, _ = dataset_status(s3_store, "ds")
    assert [(r.shard, r.state) for r in rows] == [(0, "done"), (1, "failed"), (2, "missing")]
    assert "labeler exploded" in rows[1].detail
    run_unit(s3_store, _unit(1), _compute([], 1))
    rows = shard_status(s3_store, "ds", {"s3test": ("numbers",)}, {"s3test": [0, 1]})
    assert [r.state for r in rows] == ["done", "done"]


def test_lineage_on_s3(s3_store):
    up = run_unit(s3_store, _unit(2), _compute([], 2)).manifests[0]
    down = run_unit(s3_store, _unit(2, "doubled", [up.as_input()]),
                    lambda: UnitOutput({"doubled": pa.table({"sample_key": ["a"]})})).manifests[0]
    node = lineage(s3_store, "ds", "doubled", 2)
    assert node.parents[0].manifest.digest == up.digest
    assert "ds/numbers shard 2" in "\n".join(describe(node))
    # the CLI path: the store root is derived from the URI alone
    text = lineage_text(down.uri, storage_options=s3_store.storage_options)
    assert down.uri in text and up.uri in text


def test_first_commit_sends_no_delete_for_an_absent_manifest(s3_store):
    """A part's first commit reads its (absent) manifest once and does not DELETE it; a re-made part's commit
    still removes the old manifest before writing new bytes, and the new manifest is what readers see."""
    from bench.bench_commit import s3_calls

    first = s3_calls(s3_store, lambda: run_unit(s3_store, _unit(0), _compute([], 0)))
    again = s3_calls(s3_store, lambda: run_unit(s3_store, _unit(0, scale=3), _compute([], 0, 3)))
    # the only DELETE left on a first commit is the failure record's clean-up (absent too, unknown without a HEAD)
    assert first["delete_object"] == 1, first
    assert again["delete_object"] == 2, again
    assert sum(again.values()) == sum(first.values()) + 1
    fresh = ArtifactStore(s3_store.root_uri, s3_store.storage_options)
    assert fresh.read_table("ds", "numbers", 0, verify=True).column("value").to_pylist() == [0, 3, 6]
