"""build-dataset makespan with and without per-shard pipelining, on a cluster in a box of 2 Ray workers.

Starts a real two-node Ray cluster on this host (1 CPU each by default, token auth on, tests/ray_cluster.py),
runs ``python -m pipelines run`` into a fresh store, once stage by stage (``--no-pipeline``: every shard of a
stage before any of the next) and once pipelined (a shard's next stage starts as soon as what it reads is
committed; tokenize waits for the tokenizers, trained on their declared subset), alternating which goes first
each round, and prints the flow's own duration (from its run record) for each and their ratio (means over
rounds).

    PYTHONPATH=. python bench/bench_pipelining.py                               # the demo preset
    PYTHONPATH=. python bench/bench_pipelining.py --set tokenize.train.steps=30 --rounds 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_ray_cluster import build_on  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="demo", help="preset or YAML path")
    ap.add_argument("--cpus-per-node", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1, help="barrier / pipelined pairs")
    ap.add_argument("--pipelined-first", action="store_true", help="start round 0 with the pipelined build")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="dataset config override")
    args = ap.parse_args()
    times: dict[str, list[float]] = {"stage by stage": [], "pipelined": []}
    with tempfile.TemporaryDirectory(prefix="bench-pipe-") as tmp:
        runs = [("stage by stage", ["--no-pipeline"]), ("pipelined", [])]
        for r in range(args.rounds):
            # alternate which goes first, so a load that drifts over the run does not favour one side
            for name, extra in (runs if (r + args.pipelined_first) % 2 == 0 else runs[::-1]):
                flow, _ = build_on(2, args.cpus_per_node, args.dataset, args.set, Path(tmp) / f"{r}-{extra}", extra)
                times[name].append(flow)
                print(f"round {r}: {name:<15} makespan {flow:7.1f} s", flush=True)
    print(f"build-dataset {args.dataset} {' '.join(args.set)} on 2 Ray nodes of {args.cpus_per_node} CPU(s):")
    base, pipe = (sum(times[k]) / len(times[k]) for k in ("stage by stage", "pipelined"))
    print(f"  stage by stage {base:7.1f} s\n  pipelined      {pipe:7.1f} s\n  pipelined / stage by stage {pipe / base:.2f}")


if __name__ == "__main__":
    main()
