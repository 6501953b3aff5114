"""The evaluate flow under Prefect's test harness, and its CLI: committed result, Prefect artifacts, cache."""

from __future__ import annotations

from fourm_core.store import ArtifactStore
from pipelines.__main__ import demo_evaluation, main
from pipelines.evaluate import evaluate
from tests.conftest import TINY_EVAL_OVERRIDES


def test_evaluate_flow_commits_and_publishes(prefect_api, tiny_eval_store, capsys):
    store, checkpoint = tiny_eval_store
    overrides = {**TINY_EVAL_OVERRIDES, "seed": 3}  # its own result, whatever other tests committed
    state = evaluate(config="demo", store_root=store.root_uri, overrides=overrides, return_state=True)
    assert state.is_completed()
    result = state.result()
    flow_run_id = str(state.state_details.flow_run_id)
    assert result["status"] == "done" and result["artifact"] == "evaluations/tiny/step-00000001"
    m = ArtifactStore(store.root_uri).read_manifest("ev", result["artifact"], None)
    assert m.flow_run_id == flow_run_id and m.ingredients.model.digest == checkpoint.digest
    assert {r["reference"] for r in result["rows"]} >= {"pseudo label", "ground truth"}

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        keys = {a.key: a for a in client.read_latest_artifacts()}
    from pipelines.report import artifact_key

    key = artifact_key("evaluate", "ev", "tiny", store_root=store.root_uri)  # per dataset, run and store
    assert keys[key].type == "table"
    assert keys[key + "-report"].type == "markdown"
    assert "tokenizer bound" in keys[key + "-report"].data

    # the CLI runs the same flow: nothing changed, so the committed result is reused
    args = ["evaluate", "demo", "--root", store.root_uri] + [f"--set={k}={_json(v)}" for k, v in overrides.items()]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "evaluate ev/evaluations/tiny/step-00000001" in out and ": cached" in out and "data.report.md" in out


def test_demo_evaluates_only_when_a_checkpoint_exists(tmp_path, capsys):
    assert demo_evaluation(str(tmp_path / "empty")) is None
    assert "evaluation skipped" in capsys.readouterr().out


def test_bad_eval_config_is_an_operator_error(tmp_path, capsys):
    assert main(["evaluate", "nosuch", "--root", str(tmp_path)]) == 2
    assert "eval preset" in capsys.readouterr().err


def _json(v) -> str:
    import json

    return json.dumps(v)
