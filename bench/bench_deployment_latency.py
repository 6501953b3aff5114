"""Time from ``prefect deployment run build-dataset/demo`` to the first unit running, on the cluster in a box.

A real ``prefect server``, the fourm-cpu / fourm-gpu pools, ``prefect deploy --all`` from a clone and a process
worker per pool in its own folder (tests/pipelines/cluster.py): each run pays the worker's poll, the flow-run
process start, the ``git_clone`` pull step, the flow's imports and the plan task. The fake test stages keep the
units themselves trivial, so the figures are the orchestration overhead alone.

    python bench/bench_deployment_latency.py [--runs 3] [--poll 2]

Prints, per run: seconds from the CLI call to the flow run being picked up (Pending), to the flow running,
and to the first shard task running; then the median of each.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.pipelines.cluster import api, prefect, start_cluster  # noqa: E402
from tests.pipelines.fake_stage import CONFIG_YAML, REGISTRATION  # noqa: E402
from tests.servers import kill, start_prefect_server  # noqa: E402


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def _state_times(api_url: str, flow_run_id: str) -> dict[str, float]:
    """First time the flow run entered each state type (from its state history)."""
    states = api(api_url, f"flow_run_states/?flow_run_id={flow_run_id}")
    out: dict[str, float] = {}
    for s in sorted(states, key=lambda s: s["timestamp"]):
        out.setdefault(s["type"], _ts(s["timestamp"]))
    return out


def _first_unit_start(api_url: str, flow_run_id: str) -> float | None:
    runs = api(api_url, "task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
    starts = [_ts(r["start_time"]) for r in runs if "-shard-" in r["name"] and r["start_time"]]
    return min(starts) if starts else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--poll", type=float, default=2.0, help="PREFECT_WORKER_QUERY_SECONDS of the workers")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = work / "fk.yaml"
        config.write_text(CONFIG_YAML.format(name="fk"))
        server = start_prefect_server(work / "server")
        cluster = None
        try:
            cluster = start_cluster(server, work / "cluster", {"FOURM_EXTRA_STAGES": REGISTRATION,
                                                               "PREFECT_WORKER_QUERY_SECONDS": str(args.poll)})
            rows = []
            for i in range(args.runs):
                params = ["--param", f"dataset={config}", "--param", f"store_root={work / f'store-{i}'}",
                          "--param", "ray_address=off"]
                t0 = time.time()
                out = prefect(cluster.env, "deployment", "run", "build-dataset/demo", *params)
                flow_run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)
                state = cluster.wait(flow_run_id, 300)
                assert state == "COMPLETED", f"run {i} ended {state}:\n{cluster.log('fourm-cpu')[-3000:]}"
                times = _state_times(server.api_url, flow_run_id)
                unit = _first_unit_start(server.api_url, flow_run_id)
                row = {"picked up": times["PENDING"] - t0, "flow running": times["RUNNING"] - t0,
                       "first unit running": unit - t0}
                rows.append(row)
                print(f"run {i}: " + ", ".join(f"{k} {v:.1f} s" for k, v in row.items()), flush=True)
            print(f"median of {args.runs} (worker poll {args.poll:g} s): "
                  + ", ".join(f"{k} {statistics.median(r[k] for r in rows):.1f} s" for k in rows[0]))
        finally:
            if cluster is not None:
                cluster.stop()
            kill(server.proc)


if __name__ == "__main__":
    main()
