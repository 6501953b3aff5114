"""Progress records of a stage library, made in a Prefect task's thread, reach that run's log (with the flow
and task run ids) once the flow forwards ``fourm.progress``; outside a run they are not sent and raise nothing."""

from __future__ import annotations

from prefect import flow, task
from prefect.logging.handlers import set_api_log_sink

from fourm_core.progress import ProgressLog
from pipelines.run_log import forward_progress


@task
def _long_unit() -> None:
    with ProgressLog("train-tokenizers demo", total=3, unit="step", every=0.0, bar=False) as p:
        for _ in range(3):
            p.advance(samples=8, loss=0.25)


@flow
def _progress_flow() -> None:
    forward_progress()
    _long_unit()


def test_progress_reaches_the_run_log(prefect_api):
    sent: list[dict] = []
    set_api_log_sink(sent.append)
    try:
        _progress_flow()
        with ProgressLog("outside", total=1, every=0.0, bar=False) as p:  # no run context: dropped quietly
            p.advance()
    finally:
        set_api_log_sink(None)
    ours = [log for log in sent if log["name"] == "fourm.progress"]
    assert [log["message"].split(",")[0] for log in ours] == [f"train-tokenizers demo: {i}/3 steps" for i in (1, 2, 3)]
    assert all(log["flow_run_id"] and log["task_run_id"] for log in ours)
    assert "ETA 0s" in ours[-1]["message"] and "loss 0.25" in ours[-1]["message"]
