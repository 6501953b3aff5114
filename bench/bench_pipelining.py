"""build-dataset makespan with and without per-shard pipelining, on a cluster in a box of 2 Ray workers.

Starts a real two-node Ray cluster on this host (1 CPU each by default, token auth on, tests/ray_cluster.py),
runs ``python -m pipelines run`` into a fresh store, once stage by stage (``--no-pipeline``: every shard of a
stage before any of the next) and once pipelined (a shard's next stage starts as soon as what it reads is
committed; tokenize waits for the tokenizers, trained on their declared subset), alternating which goes first
each round, and prints for each build the flow's own duration, the load average around it, and each stage's
span (first unit dispatched -> last unit finished, seconds from the flow's start; all from its run record),
then the means and their ratio.

    PYTHONPATH=. python bench/bench_pipelining.py                               # the demo preset
    PYTHONPATH=. python bench/bench_pipelining.py --set tokenize.train.steps=30 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_ray_cluster import build_on  # noqa: E402


def stage_spans(root: Path) -> dict[str, list[float]]:
    """stage -> [first unit dispatched, last unit finished], seconds from the flow's start (its run record)."""
    return json.loads(sorted(root.glob("*/_runs/*.json"))[-1].read_text())["stage_spans"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="demo", help="preset or YAML path")
    ap.add_argument("--cpus-per-node", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1, help="barrier / pipelined pairs")
    ap.add_argument("--pipelined-first", action="store_true", help="start round 0 with the pipelined build")
    ap.add_argument("--worker-niceness", type=int, default=0,
                    help="nice value of the Ray workers (Ray's default is 15: then the stages that run in the nice-0 "
                         "flow process, pseudolabel with runner=local and train-tokenizers, win the CPU from those in "
                         "Ray workers, and on a shared box everyone's jobs do)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="dataset config override")
    args = ap.parse_args()
    times: dict[str, list[float]] = {"stage by stage": [], "pipelined": []}
    with tempfile.TemporaryDirectory(prefix="bench-pipe-") as tmp:
        runs = [("stage by stage", ["--no-pipeline"]), ("pipelined", [])]
        for r in range(args.rounds):
            # alternate which goes first, so a load that drifts over the run does not favour one side
            for name, extra in (runs if (r + args.pipelined_first) % 2 == 0 else runs[::-1]):
                work = Path(tmp) / f"{r}-{'-'.join(extra) or 'pipelined'}"
                load0 = os.getloadavg()[0]
                flow, _ = build_on(2, args.cpus_per_node, args.dataset, args.set, work, extra, args.worker_niceness)
                load1 = os.getloadavg()[0]
                times[name].append(flow)
                spans = "  ".join(f"{s} {a:.0f}-{b:.0f}" for s, (a, b) in stage_spans(work / "store").items())
                print(f"round {r}: {name:<15} makespan {flow:7.1f} s  (load average {load0:.1f} -> {load1:.1f} on "
                      f"{os.cpu_count()} cores)  spans [s]: {spans}", flush=True)
    print(f"build-dataset {args.dataset} {' '.join(args.set)} on 2 Ray nodes of {args.cpus_per_node} CPU(s):")
    base, pipe = (sum(times[k]) / len(times[k]) for k in ("stage by stage", "pipelined"))
    ratios = " ".join(f"{p / b:.2f}" for b, p in zip(times["stage by stage"], times["pipelined"]))
    print(f"  stage by stage {base:7.1f} s\n  pipelined      {pipe:7.1f} s\n  pipelined / stage by stage {pipe / base:.2f} "
          f"(per round: {ratios})")


if __name__ == "__main__":
    main()
