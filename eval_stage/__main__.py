"""``python -m eval_stage``: evaluate a pretrain checkpoint (no Prefect needed).

    python -m eval_stage evaluate --config demo --store ./store [--set checkpoint.run=demo] [--force]

Prints the committed artifact, the report path and the primary metrics. ``python -m pipelines evaluate``
runs the same thing as the Prefect flow ``evaluate``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from fourm_core.config import parse_overrides


def summary_lines(summary: dict[str, Any]) -> list[str]:
    lines = [f"evaluate {summary['unit']}: {summary['status']} in {summary['seconds']:.1f} s",
             f"  report: {summary['report']}", f"  grid:   {summary['grid']}"]
    for r in summary["rows"]:
        if r["primary"] or r["task"] == "masked tokens" and r["metric"] == "accuracy":
            lines.append(f"  {r['target']:<20} {r['reference']:<34} {r['metric']:<9} model {_f(r['model'])}  "
                         f"bound {_f(r['tokenizer_bound'])}  baseline {_f(r['baseline'])}")
    return lines


def _f(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval_stage", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("evaluate", help="evaluate a checkpoint and commit the results")
    sp.add_argument("--config", default="demo", help="eval preset (demo, 4m21_b) or YAML path")
    sp.add_argument("--store", default="./store")
    sp.add_argument("--storage-options", default=None, help="JSON object of fsspec storage options")
    sp.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    sp.add_argument("--force", action="store_true")
    args = p.parse_args(argv)

    from fourm_core.store import ArtifactStore

    from .config import load_eval_config
    from .evaluation import evaluate, result_summary

    from fourm_core.config import ConfigError

    try:
        cfg = load_eval_config(args.config, parse_overrides(args.set))
        store = ArtifactStore(args.store, json.loads(args.storage_options) if args.storage_options else None)
        res = evaluate(store, cfg, force=args.force)
    except (ConfigError, FileNotFoundError, LookupError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(result_summary(store, res))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
