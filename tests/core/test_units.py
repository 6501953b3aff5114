"""The commit protocol and caching: what every stage relies on."""

import os

import pyarrow as pa
import pytest

from fourm_core import ArtifactStore, NotCommittedError, SampleError, Unit, UnitOutput, UnitStatus, run_unit
from fourm_core.store import CorruptPartError
from fourm_core.lineage import describe, lineage, parse_part, shard_status


def _unit(shard=0, config=None, inputs=(), artifacts=("numbers",), version="t/1"):
    return Unit(stage="test", dataset="ds", artifacts=list(artifacts), shard=shard, code_version=version,
                config=config or {"scale": 2}, inputs=list(inputs))


def _compute(calls, shard=0, scale=2):
    def fn():
        calls.append(shard)
        keys = [f"k{shard}-{i}" for i in range(4)]
        table = pa.table({"sample_key": keys, "value": [i * scale for i in range(4)]})
        return UnitOutput({"numbers": table}, errors=[SampleError("k-bad", "decode_error", "truncated")])
    return fn


def test_commit_then_cached(store):
    calls = []
    first = run_unit(store, _unit(), _compute(calls))
    second = run_unit(store, _unit(), _compute(calls))
    assert first.status is UnitStatus.DONE and second.status is UnitStatus.CACHED
    assert calls == [0]
    assert second.manifests[0].digest == first.manifests[0].digest
    assert store.read_table("ds", "numbers", 0).column("value").to_pylist() == [0, 2, 4, 6]


def test_read_table_reads_only_the_asked_columns_and_may_skip_missing_ones(store):
    run_unit(store, _unit(), _compute([]))
    assert store.read_table("ds", "numbers", 0, columns=["value"]).column_names == ["value"]
    assert store.read_table("ds", "numbers", 0, columns=["value", "absent"], missing_ok=True).column_names == ["value"]
    with pytest.raises(CorruptPartError):  # without missing_ok a missing column fails the read, as before
        store.read_table("ds", "numbers", 0, columns=["value", "absent"])


def test_changed_config_or_code_or_input_recomputes(store):
    calls = []
    run_unit(store, _unit(), _compute(calls))
    assert run_unit(store, _unit(config={"scale": 3}), _compute(calls)).status is UnitStatus.DONE
    assert run_unit(store, _unit(config={"scale": 3}, version="t/2"), _compute(calls)).status is UnitStatus.DONE
    upstream = run_unit(store, _unit(shard=1, artifacts=("numbers",)), _compute(calls, 1)).manifests[0]
    with_input = _unit(config={"scale": 3}, version="t/2", inputs=[upstream.as_input()])
    assert run_unit(store, with_input, _compute(calls)).status is UnitStatus.DONE
    assert run_unit(store, with_input, _compute(calls)).status is UnitStatus.CACHED
    assert calls == [0, 0, 0, 1, 0]


def test_force_recomputes(store):
    calls = []
    run_unit(store, _unit(), _compute(calls))
    assert run_unit(store, _unit(), _compute(calls), force=True).status is UnitStatus.DONE
    assert calls == [0, 0]


def test_errors_table_commits_with_the_shard(store):
    run_unit(store, _unit(), _compute([]))
    errors = store.read_errors("ds", "numbers", 0)
    assert errors.to_pylist() == [{"sample_key": "k-bad", "reason": "decode_error", "detail": "truncated"}]
    m = store.read_manifest("ds", "numbers", 0)
    assert m.errors.count == 1 and m.errors.by_reason == {"decode_error": 1}


def test_a_shard_without_manifest_is_invisible(store):
    run_unit(store, _unit(), _compute([]))
    os.remove(store.manifest_path("ds", "numbers", 0))
    assert store.committed_shards("ds", "numbers") == []
    with pytest.raises(NotCommittedError, match="not committed"):
        store.read_table("ds", "numbers", 0)
    # a re-run redoes the unit whose manifest is missing
    assert run_unit(store, _unit(), _compute([])).status is UnitStatus.DONE


def test_a_data_file_that_fails_to_write_leaves_the_old_part_invisible_not_half_new(store, monkeypatch):
    # commit writes a part's files in parallel (data and errors table); one failing write fails the commit
    # before the manifest: the earlier commit's manifest is already gone, so no reader trusts the mixed files
    run_unit(store, _unit(), _compute([]))
    real = ArtifactStore.write_bytes

    def flaky(self, path, data, durable=True):
        if path.endswith(".errors.parquet"):
            raise OSError("disk full")
        return real(self, path, data, durable)

    monkeypatch.setattr(ArtifactStore, "write_bytes", flaky)
    res = run_unit(store, _unit(config={"scale": 3}), _compute([], scale=3), raise_on_failure=False)
    assert res.status is UnitStatus.FAILED and "disk full" in res.error
    assert store.committed_shards("ds", "numbers") == []
    with pytest.raises(NotCommittedError):
        store.read_table("ds", "numbers", 0)
    monkeypatch.setattr(ArtifactStore, "write_bytes", real)
    assert run_unit(store, _unit(config={"scale": 3}), _compute([], scale=3)).status is UnitStatus.DONE
    assert store.read_table("ds", "numbers", 0).column("value").to_pylist() == [0, 3, 6, 9]


def test_only_files_with_data_a_reader_trusts_are_fsynced(store, monkeypatch):
    # fsync is for data, errors and manifest bytes; index marks (empty) and leases (advisory) skip it
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd)))
    run_unit(store, _unit(), _compute([]))
    names = sorted(os.path.basename(p).split(".tmp-")[0] for p in synced)
    assert names == ["shard-00000.errors.parquet", "shard-00000.manifest.json", "shard-00000.parquet"]


def test_failure_is_recorded_and_raised_then_cleared(store):
    def boom():
        raise RuntimeError("model exploded")

    with pytest.raises(RuntimeError, match="model exploded"):
        run_unit(store, _unit(), boom)
    assert "model exploded" in store.failed_shards("ds", "numbers")[0]["error"]
    assert store.committed_shards("ds", "numbers") == []
    run_unit(store, _unit(), _compute([]))
    assert store.failed_shards("ds", "numbers") == {}


def test_failure_without_raise(store):
    res = run_unit(store, _unit(), lambda: 1 / 0, raise_on_failure=False)
    assert res.status is UnitStatus.FAILED and "ZeroDivisionError" in res.error


def test_multi_artifact_unit_is_cached_only_when_all_exist(store):
    def fn():
        t = pa.table({"sample_key": ["a"], "v": [1]})
        return UnitOutput({"depth": t, "normal": t})

    unit = _unit(artifacts=("depth", "normal"))
    assert run_unit(store, unit, fn).status is UnitStatus.DONE
    os.remove(store.manifest_path("ds", "normal", 0))
    assert run_unit(store, unit, fn).status is UnitStatus.DONE


def test_missing_table_fails_the_unit(store):
    with pytest.raises(RuntimeError, match="no table"):
        run_unit(store, _unit(artifacts=("a", "b")), lambda: UnitOutput({"a": pa.table({"x": [1]})}))


def test_manifest_records_lineage_ingredients(store):
    up = run_unit(store, _unit(shard=3), _compute([], 3)).manifests[0]
    down = run_unit(store, _unit(shard=3, artifacts=("numbers2",), inputs=[up.as_input()]),
                    lambda: UnitOutput({"numbers2": pa.table({"sample_key": ["x"]})})).manifests[0]
    assert down.ingredients.inputs[0].digest == up.digest
    assert down.host and down.timings.seconds >= 0 and down.schema_ == {"sample_key": "string"}
    assert parse_part(store, down.uri) == ("ds", "numbers2", 3)
    node = lineage(store, "ds", "numbers2", 3)
    assert node.parents[0].manifest.digest == up.digest
    text = "\n".join(describe(node))
    assert "numbers2" in text and "numbers" in text and up.digest[:16] in text


def test_lineage_flags_changed_inputs(store):
    up = run_unit(store, _unit(), _compute([])).manifests[0]
    run_unit(store, _unit(artifacts=("b",), inputs=[up.as_input()]),
             lambda: UnitOutput({"b": pa.table({"sample_key": ["x"]})}))
    run_unit(store, _unit(config={"scale": 5}), _compute([], scale=5))  # upstream recomputed
    assert "changed since" in lineage(store, "ds", "b", 0).missing[0]


def test_status_rows(store):
    res = run_unit(store, _unit(), _compute([]))
    store.write_run_record("ds", "run-1", {"units": [res.summary()]})
    rows = shard_status(store, "ds", {"test": ("numbers",)}, {"test": [0, 1]})
    assert [(r.shard, r.state) for r in rows] == [(0, "done"), (1, "missing")]
    res = run_unit(store, _unit(), _compute([]))
    store.write_run_record("ds", "run-2", {"units": [res.summary()]})
    assert shard_status(store, "ds", {"test": ("numbers",)}, {"test": [0]})[0].state == "cached"


def test_non_shard_artifact(store):
    unit = Unit(stage="tok", dataset="tokenizers", artifacts=["vqvae"], shard=None, code_version="1")
    res = run_unit(store, unit, lambda: UnitOutput({"vqvae": pa.table({"k": [1]})},
                                                   extra_files={"vqvae": {".safetensors": b"w"}}))
    assert res.manifests[0].uri.endswith("vqvae/data.parquet")
    assert {f.name for f in res.manifests[0].files} >= {"data.safetensors", "data.parquet"}
    assert ArtifactStore(store.root_uri).read_manifest("tokenizers", "vqvae", None).digest == res.manifests[0].digest


def test_collecting_units_records_without_computing_or_committing(store):
    from fourm_core.units import collecting_units

    calls = []
    with collecting_units() as units:
        run_unit(store, _unit(shard=0), _compute(calls, 0))
        run_unit(store, _unit(shard=1), _compute(calls, 1), force=True)
    assert [u.shard for u in units] == [0, 1] and calls == []
    assert store.committed_shards("ds", "numbers") == []
    assert run_unit(store, _unit(shard=0), _compute(calls, 0)).status is UnitStatus.DONE  # normal again after


def test_fast_cache_key_equals_the_manifests_ingredients_key():
    """Unit.cache_key is computed without pydantic for speed; it must equal Ingredients.cache_key()."""
    from pydantic import BaseModel

    from fourm_core.manifest import InputRef, ModelRef

    class Cfg(BaseModel):
        size: int = 3
        scale: list[float] = [0.5, 1.0]
        name: str = "ü ✓"
        nested: dict = {"b": {"z": 1, "a": None}, "a": True}

    refs = [InputRef(dataset="d", artifact="x/y", shard=s, uri=f"u{s}", digest=f"{s}" * 8) for s in (3, 1)]
    units = [Unit(stage="s", dataset="d", artifacts=["a"], shard=0, code_version="v/1"),
             Unit(stage="s", dataset="d", artifacts=["a"], shard=None, code_version="v/2", config=Cfg(), inputs=refs,
                  model=ModelRef(id="m", source="tiny", digest="abc")),
             Unit(stage="t", dataset="d", artifacts=["a", "b"], shard=7, code_version="v", config={"k": [1, 2.5, "x"]})]
    for u in units:
        assert u.cache_key == u.ingredients().cache_key()
