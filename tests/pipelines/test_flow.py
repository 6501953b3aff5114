"""The build-dataset flow under Prefect's test harness: caching, rerun, retries, validation, failures."""

from __future__ import annotations

import pytest

from fourm_core import ArtifactStore
from fourm_core.config import ConfigError
from pipelines.__main__ import main
from pipelines.build_dataset import build_dataset
from pipelines.stages import StageNotAvailable


def _task_runs(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def _statuses(result):
    return {(u["stage"], u["shard"]): u["status"] for u in result["units"]}


def test_build_cached_rerun_on_ray(prefect_api, ray_local, fake_dataset, tmp_path, capsys):
    root = str(tmp_path / "store")
    state = build_dataset(dataset=fake_dataset, store_root=root, return_state=True)
    first = state.result()
    flow_run_id = str(state.state_details.flow_run_id)
    assert set(_statuses(first).values()) == {"done"} and len(first["units"]) == 6
    store = ArtifactStore(root)
    m = store.read_manifest("fk", "numbers", 1)
    assert m.flow_run_id == flow_run_id  # recorded inside the Ray worker
    assert store.read_table("fk", "doubled", 2).column("value").to_pylist() == [16, 18, 20, 22]
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()
    from pipelines.report import artifact_key

    key = artifact_key("build-dataset", "fk", store_root=store.root_uri)
    assert key.startswith("build-dataset-fk-") and any(a.key == key for a in artifact)

    second = build_dataset(dataset=fake_dataset, store_root=root)
    assert set(_statuses(second).values()) == {"cached"}
    assert main(["status", fake_dataset, "--root", root]) == 0
    out = capsys.readouterr().out
    assert "0 done, 6 cached, 0 failed, 0 missing" in out

    assert main(["rerun", "--dataset", fake_dataset, "--stage", "fake", "--shard", "1", "--root", root]) == 0
    assert "1 units done, 0 cached" in capsys.readouterr().out
    assert store.read_manifest("fk", "numbers", 1).timings.finished > m.timings.finished
    assert store.read_manifest("fk", "numbers", 0).flow_run_id == flow_run_id  # untouched
    assert main(["status", "fk", "--root", root]) == 0
    out = capsys.readouterr().out
    assert "shards [1], forced" in out and "fake       numbers   00001  done" in out


def test_unit_that_fails_once_is_retried(prefect_api, fake_dataset, tmp_path, monkeypatch):
    markers = tmp_path / "fail-once"
    markers.mkdir()
    (markers / "2").touch()
    monkeypatch.setenv("FAKE_STAGE_FAIL_ONCE", str(markers))
    root = str(tmp_path / "store")
    state = build_dataset(dataset=fake_dataset, store_root=root, stages=["fake"], ray_address="off",
                          return_state=True)
    assert state.is_completed() and set(_statuses(state.result()).values()) == {"done"}
    runs = {r.name: r for r in _task_runs(state.state_details.flow_run_id)}
    assert runs["fake-shard-2"].run_count == 2 and runs["fake-shard-0"].run_count == 1
    assert ArtifactStore(root).failed_shards("fk", "numbers") == {}


def test_unit_failing_after_retries_fails_the_run_and_shows_in_status(prefect_api, fake_dataset, tmp_path,
                                                                       monkeypatch, capsys):
    markers = tmp_path / "fail-once"
    markers.mkdir()
    (markers / "0").touch()
    monkeypatch.setenv("FAKE_STAGE_FAIL_ONCE", str(markers))
    root = str(tmp_path / "store")
    state = build_dataset(dataset=fake_dataset, store_root=root, ray_address="off", retries=0, return_state=True)
    assert state.is_failed()
    with pytest.raises(RuntimeError, match="1 unit"):
        state.result()
    store = ArtifactStore(root)
    assert store.committed_shards("fk", "numbers") == [1, 2]
    # a failure stops only what reads it: shard 0's next stage is blocked, shards 1 and 2 went on
    assert store.committed_shards("fk", "doubled") == [1, 2]
    assert main(["status", "fk", "--root", root]) == 0
    out = capsys.readouterr().out
    assert "failed" in out and "transient failure on shard 0" in out
    assert "not run by the latest run (an input they read failed): fake_down shard(s) [0]" in out
    # the operator's fix: re-run exactly the failed shard
    assert main(["rerun", "--dataset", fake_dataset, "--stage", "fake", "--shard", "0", "--root", root,
                 "--ray-address", "off"]) == 0
    assert store.committed_shards("fk", "numbers") == [0, 1, 2] and store.failed_shards("fk", "numbers") == {}


def test_a_shard_moves_on_while_a_slow_shard_of_the_same_stage_is_still_running(prefect_api, fake_dataset, tmp_path,
                                                                                 monkeypatch):
    # The dispatcher must hear of each unit as it finishes: prefect.futures.wait returns only when all are done.
    monkeypatch.setenv("FAKE_STAGE_SLOW", "0:6")
    root = str(tmp_path / "store")
    assert build_dataset(dataset=fake_dataset, store_root=root, ray_address="off", return_state=True).is_completed()
    store = ArtifactStore(root)
    slow_done = store.read_manifest("fk", "numbers", 0).timings.finished
    assert store.read_manifest("fk", "doubled", 1).timings.finished < slow_done
    spans = store.latest_run_record("fk")["stage_spans"]
    assert set(spans) == {"fake", "fake_down"} and 0 <= spans["fake"][0] <= spans["fake_down"][0] < spans["fake"][1]


def test_run_failing_at_planning_still_writes_its_record_and_artifact(prefect_api, fake_dataset, tmp_path):
    root = str(tmp_path / "store")
    state = build_dataset(dataset=fake_dataset, store_root=root, ray_address="off", shards=[99], return_state=True)
    with pytest.raises(ValueError, match=r"no shard\(s\) \[99\]"):
        state.result()
    record = ArtifactStore(root).latest_run_record("fk")
    assert record["error"].startswith("UnknownShardError: stage 'fake' has no shard(s) [99]") and record["shards"] == [99]
    from prefect.client.orchestration import get_client

    from pipelines.report import artifact_key

    with get_client(sync_client=True) as client:
        arts = {a.key: a for a in client.read_latest_artifacts()}
    summary = arts[artifact_key("build-dataset", "fk", store_root=ArtifactStore(root).root_uri) + "-summary"]
    assert "failed outside its units" in summary.data and "[99]" in summary.data


def test_bad_config_fails_before_any_task(prefect_api, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: fk\nsources: [{kind: synthetic, n_samples: 4}]\ningest: {shard_size: -1}\n")
    state = build_dataset(dataset=str(bad), store_root=str(tmp_path / "s"), return_state=True)
    assert state.is_failed()
    with pytest.raises(ConfigError, match="ingest.shard_size"):
        state.result()
    assert _task_runs(state.state_details.flow_run_id) == []

    good = tmp_path / "good.yaml"
    good.write_text("name: fk\nsources: [{kind: synthetic, n_samples: 4}]\nstages: [fake, nope]\n")
    state = build_dataset(dataset=str(good), store_root=str(tmp_path / "s"), return_state=True)
    with pytest.raises(StageNotAvailable, match="unknown stage 'nope'"):
        state.result()
    assert _task_runs(state.state_details.flow_run_id) == []
