"""Errors no retry can fix fail at once: real flow runs under the test harness, attempts counted by Prefect."""

from __future__ import annotations

import pytest

from fourm_core import ArtifactStore
from pipelines.build_dataset import build_dataset
from pipelines.errors import UnknownShardError
from tests.pipelines.test_flow import _task_runs


def _run_counts(flow_run_id) -> dict[str, int]:
    return {r.name: r.run_count for r in _task_runs(flow_run_id)}


def test_missing_input_is_not_retried_but_a_transient_failure_is(prefect_api, fake_dataset, tmp_path, monkeypatch):
    markers = tmp_path / "fail-once"
    markers.mkdir()
    (markers / "0").touch()  # shard 0: transient, passes on the second attempt
    monkeypatch.setenv("FAKE_STAGE_FAIL_ONCE", str(markers))
    monkeypatch.setenv("FAKE_STAGE_MISSING", "2")  # shard 2: its input is missing on every attempt
    root = str(tmp_path / "store")
    state = build_dataset(dataset=fake_dataset, store_root=root, stages=["fake"], ray_address="off",
                          return_state=True)
    assert state.is_failed()
    with pytest.raises(RuntimeError, match="FileNotFoundError: input of shard 2 does not exist"):
        state.result()
    counts = _run_counts(state.state_details.flow_run_id)
    assert counts["fake-shard-2"] == 1  # no retry of a missing input
    assert counts["fake-shard-0"] == 2  # the same task retries a transient failure
    store = ArtifactStore(root)
    assert store.committed_shards("fk", "numbers") == [0, 1]
    assert "does not exist" in store.failed_shards("fk", "numbers")[2]["error"]


def test_missing_cc12m_source_fails_at_once(prefect_api, tmp_path, monkeypatch):
    """The nightly preset with its URL list missing (CC12M_TSV wrong): one attempt, no retry delays."""
    monkeypatch.setenv("CC12M_TSV", str(tmp_path / "nowhere" / "cc12m.tsv"))
    state = build_dataset(dataset="cc12m", store_root=str(tmp_path / "store"), ray_address="off",
                          overrides={"pseudolabel.runner": "local"}, return_state=True)  # Ray off: in-process
    assert state.is_failed()
    with pytest.raises(FileNotFoundError, match="cc12m.tsv' does not exist"):
        state.result()
    assert _run_counts(state.state_details.flow_run_id) == {"plan-ingest": 1}  # no retry, no retry delay


def test_unknown_shard_fails_before_any_unit(prefect_api, fake_dataset, tmp_path):
    state = build_dataset(dataset=fake_dataset, store_root=str(tmp_path / "store"), stages=["fake"], shards=[7],
                          ray_address="off", return_state=True)
    with pytest.raises(UnknownShardError, match=r"no shard\(s\) \[7\].*planned shards: \[0, 1, 2\]"):
        state.result()
    assert _run_counts(state.state_details.flow_run_id) == {"plan-fake": 1}
