"""build-dataset wall time on a cluster in a box: 1 Ray node vs 2 nodes of the same size.

Starts a real Ray cluster on this host (``ray start --head`` [+ ``ray start --address``], token auth on,
tests/ray_cluster.py), runs ``python -m pipelines run`` against it through FOURM_RAY_ADDRESS into a fresh
store, and prints the flow's own duration (from its run record: Prefect's start-up excluded) and the
process wall time, then the ratio. Clusters are stopped by process group, never with ``ray stop``.

    PYTHONPATH=. python bench/bench_ray_cluster.py                       # the demo preset, 1-CPU nodes
    PYTHONPATH=. python bench/bench_ray_cluster.py --cpus-per-node 2 --set pseudolabel.runner=ray
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.ray_cluster import start_ray_cluster  # noqa: E402


def build_on(n_nodes: int, cpus: int, dataset: str, overrides: list[str], workdir: Path,
             extra_args: list[str] = (), worker_niceness: int | None = None) -> tuple[float, float]:
    """(flow seconds from the run record, process wall seconds) of one build on a fresh n-node cluster."""
    workdir.mkdir(parents=True)
    cluster = start_ray_cluster(workdir, [cpus] * n_nodes, worker_niceness=worker_niceness)
    try:
        root = workdir / "store"
        cmd = [sys.executable, "-m", "pipelines", "run", "--dataset", dataset, "--root", str(root)]
        for o in overrides:
            cmd += ["--set", o]
        cmd += list(extra_args)
        t0 = time.perf_counter()
        res = subprocess.run(cmd, cwd=REPO, env=dict(cluster.env, FOURM_RAY_ADDRESS=cluster.address),
                             capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if res.returncode != 0:
            raise SystemExit(f"build failed on {n_nodes} node(s):\n{(res.stdout + res.stderr)[-4000:]}")
        records = sorted(root.glob("*/_runs/*.json"))
        rec = json.loads(records[-1].read_text())
        flow = (datetime.fromisoformat(rec["finished"]) - datetime.fromisoformat(rec["started"])).total_seconds()
        return flow, wall
    finally:
        cluster.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="demo", help="preset or YAML path")
    ap.add_argument("--cpus-per-node", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="dataset config override")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        results = {n: build_on(n, args.cpus_per_node, args.dataset, args.set, Path(tmp) / f"n{n}") for n in (1, 2)}
    print(f"build-dataset {args.dataset} {' '.join(args.set)} on nodes of {args.cpus_per_node} CPU(s):")
    for n, (flow, wall) in results.items():
        print(f"  {n} node(s): flow {flow:7.1f} s   process wall {wall:7.1f} s")
    (f1, w1), (f2, w2) = results[1], results[2]
    print(f"  speed-up 2 vs 1 node: flow {f1 / f2:.2f}x   wall {w1 / w2:.2f}x")


if __name__ == "__main__":
    main()
