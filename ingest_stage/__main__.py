"""``python -m ingest_stage --dataset demo --root ./store [--shard N ...] [--force] [--set ingest.shard_size=16]``

Runs the ingestion stage on one dataset with no Prefect and no Ray: every shard (or the given ones), a
progress bar over samples, and a summary of per-reason failure counts. Exit status 1 when a shard failed
as a whole (per-sample failures are normal and only counted).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from tqdm import tqdm

from fourm_core.config import ConfigError, load_dataset_config, parse_overrides
from fourm_core.store import ArtifactStore
from fourm_core.units import UnitStatus

from .plan import build_plan
from .stage import artifacts_for, run_shard


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ingest_stage", description=__doc__.split("\n\n")[1])
    ap.add_argument("--dataset", required=True, help="preset name (cc12m, coyo700m, c4, demo) or a YAML path")
    ap.add_argument("--root", default="./store", help="store root: a local folder or s3://bucket/prefix")
    ap.add_argument("--shard", type=int, nargs="+", action="extend", help="only these shards (default: all)")
    ap.add_argument("--force", action="store_true", help="recompute even when a matching shard is committed")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field, e.g. --set ingest.shard_size=16 (repeatable)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    args = ap.parse_args(argv)

    try:
        config = load_dataset_config(args.dataset, parse_overrides(args.overrides))
        plan = build_plan(config)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a source that cannot be listed at all: name it, no traceback
        print(f"error: listing the sources of '{args.dataset}' failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    shards = args.shard if args.shard else list(range(plan.n_shards))
    bad = [s for s in shards if not 0 <= s < plan.n_shards]
    if bad:
        print(f"error: dataset '{config.name}' has shards 0..{plan.n_shards - 1}; no shard {bad}", file=sys.stderr)
        return 2
    store = ArtifactStore(args.root)
    print(f"ingest {config.name}: {plan.total} samples in {plan.n_shards} shards of {config.ingest.shard_size} -> "
          f"{store.root_uri}/{config.name}/{{{','.join(artifacts_for(config))}}}; running {len(shards)} shard(s)")

    reasons: Counter[str] = Counter()
    notes: Counter[str] = Counter()  # kept samples worth knowing about: no caption, cropped, skipped files
    status: Counter[str] = Counter()
    ok = failed_units = 0
    t0 = time.perf_counter()
    n_samples = sum(min(plan.shard_size, plan.total - s * plan.shard_size) for s in shards)
    with tqdm(total=n_samples, unit="sample", disable=args.no_progress, file=sys.stderr) as bar:
        for shard in shards:
            bar.set_description(f"shard {shard:05d}")
            size = min(plan.shard_size, plan.total - shard * plan.shard_size)
            before = bar.n
            try:
                result = run_shard(store, config, shard, force=args.force, progress=bar.update, plan=plan)[0]
            except Exception as exc:  # a unit failure: recorded beside the shard by run_unit; go on with the rest
                failed_units += 1
                status["failed"] += 1
                bar.write(f"shard {shard:05d}: FAILED: {type(exc).__name__}: {exc}")
                bar.update(size - (bar.n - before))
                continue
            bar.update(size - (bar.n - before))  # cached shards did no per-sample work
            status[result.status.value] += 1
            m = result.manifests[0]
            reasons.update(m.errors.by_reason)
            notes.update({k: m.stats.get(k, 0) for k in _NOTES})
            ok += m.rows
            how = "cached" if result.status is UnitStatus.CACHED else f"done in {result.seconds:.1f}s"
            detail = ", ".join(f"{k} {v}" for k, v in sorted(m.errors.by_reason.items())) or "none"
            bar.write(f"shard {shard:05d}: {how}: {m.rows} ok, {m.errors.count} failed ({detail})")
    elapsed = time.perf_counter() - t0
    print(f"summary: {len(shards)} shard(s) ({', '.join(f'{v} {k}' for k, v in sorted(status.items()))}), "
          f"{ok} samples ok, {sum(reasons.values())} failed in {elapsed:.1f}s")
    for reason, n in reasons.most_common():
        print(f"  {reason:<20} {n}")
    if any(notes.values()):
        print("kept, but: " + ", ".join(f"{k} {v}" for k, v in notes.items() if v))
    return 1 if failed_units else 0


_NOTES = ("no_caption", "cropped_aspect", "skipped_files")


if __name__ == "__main__":
    sys.exit(main())
