"""``python -m pipelines`` (also ``fourm``): run, re-run and inspect dataset builds.

    status  <dataset> [--root R]                 stage x shard table: done / cached / failed / missing
    lineage <artifact path or URI> [--root R] [--depth N]   the upstream tree of one committed part
    verify  <dataset> [--stage S] [--shard N ...] [--root R]  re-read data, check digests and rows vs manifests
    run     [--dataset D] [--root R] [--stages S ...] [--shards N ...] [--force]
    rerun   --dataset D --stage S [--shard N ...] [--root R]   redo exactly those units
    pretrain [CONFIG] [--root R] [--steps N] [--log-dir D] [--force] [--set F=V]   the pretrain flow (CONFIG:
                                                  a train preset, default demo, or a YAML path)
    demo    [--root R]                            build the demo dataset and its held-out scenes (demo-heldout),
                                                  pretrain/demo on demo's token shards, then evaluate the
                                                  checkpoint on the held-out scenes (report + generation grid)
    evaluate [CONFIG] [--root R] [--set F=V ...] [--force]   evaluate a pretrain checkpoint (eval preset
                                                  demo | 4m21_b, or a YAML path): report + grid in the store

``--storage-options`` (or $FOURM_STORAGE_OPTIONS) is a JSON object for fsspec/s3fs, e.g.
``{"endpoint_url": "http://127.0.0.1:8333"}``; credentials are best left to the usual AWS variables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from fourm_core.config import ConfigError, load_dataset_config, parse_overrides

DEFAULT_ROOT = os.environ.get("FOURM_STORE_ROOT", "./store")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def store_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--root", default=DEFAULT_ROOT, help="store root: folder or s3://bucket/prefix "
                                                             "(default $FOURM_STORE_ROOT or ./store)")
        sp.add_argument("--storage-options", default=None, help="JSON object of fsspec storage options")

    sp = sub.add_parser("status", help="stage x shard table of a dataset")
    sp.add_argument("dataset", help="preset name, YAML path, or the dataset's folder name in the store")
    store_args(sp)
    sp.add_argument("--json", action="store_true", help="machine-readable rows")

    sp = sub.add_parser("verify", help="re-read committed data and check it against its manifests")
    sp.add_argument("dataset", help="preset name, YAML path, or the dataset's folder name in the store")
    sp.add_argument("--stage", default=None, help="only this stage's artifacts")
    sp.add_argument("--shard", action="append", type=int, default=None, help="repeatable; default: every shard")
    store_args(sp)

    sp = sub.add_parser("lineage", help="upstream tree of one artifact part")
    sp.add_argument("part", help="data path, manifest path or URI, e.g. store/demo/images/shard-00000.parquet")
    sp.add_argument("--root", default=None, help="store root, when PART is relative to it (demo/images/shard-00000)")
    sp.add_argument("--storage-options", default=None)
    sp.add_argument("--depth", type=int, default=None, help="levels of inputs to expand (default: all)")

    def flow_args(sp: argparse.ArgumentParser) -> None:
        store_args(sp)
        sp.add_argument("--ray-address", default=None, help="host:port of a Ray head (GCS), auto, ray://host:port, "
                                                            "local, or off (in-process); default $FOURM_RAY_ADDRESS, "
                                                            "else a local Ray")
        sp.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="config override, value parsed as JSON when possible (ingest.shard_size=8)")

    sp = sub.add_parser("run", help="run the build-dataset flow")
    sp.add_argument("--dataset", default="demo")
    sp.add_argument("--stages", nargs="+", default=None)
    sp.add_argument("--shards", nargs="+", type=int, default=None)
    sp.add_argument("--force", action="store_true")
    sp.add_argument("--no-pipeline", action="store_true",
                    help="stage by stage (every shard of a stage before any of the next) instead of per shard")
    flow_args(sp)

    sp = sub.add_parser("rerun", help="redo just these units (force) of one or more stages")
    sp.add_argument("--dataset", required=True)
    sp.add_argument("--stage", action="append", required=True, help="repeatable")
    sp.add_argument("--shard", action="append", type=int, default=None, help="repeatable; default: every shard")
    flow_args(sp)

    sp = sub.add_parser("pretrain", help="run the pretrain flow (train the 4M model on committed token shards)")
    sp.add_argument("config", nargs="?", default="demo", help="train preset (demo, 4m21_b) or YAML path")
    store_args(sp)
    sp.add_argument("--steps", type=int, default=None)
    sp.add_argument("--log-dir", default=None, help="log.jsonl, TensorBoard events, loss.png (default runs/<run>)")
    sp.add_argument("--force", action="store_true", help="train from scratch even if the checkpoint is cached")
    sp.add_argument("--nproc-per-node", type=int, default=None, help="launch torchrun with this many processes")
    sp.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="train config override, value parsed as JSON when possible (batch_size=32)")

    sp = sub.add_parser("demo", help="build the demo dataset and its held-out scenes (ephemeral Prefect, local Ray), "
                                     "print their status, pretrain/demo on demo's token shards, then evaluate it "
                                     "on the held-out scenes")
    sp.add_argument("--root", default=DEFAULT_ROOT, help="store root (default $FOURM_STORE_ROOT or ./store)")
    sp.add_argument("--ray-address", default=None)
    sp.add_argument("--log-dir", default=None, help="training logs (default runs/demo)")
    sp.add_argument("--no-train", action="store_true", help="build the datasets only")

    sp = sub.add_parser("evaluate", help="run the evaluate flow on a pretrain checkpoint")
    sp.add_argument("config", nargs="?", default="demo", help="eval preset (demo, 4m21_b) or YAML path")
    store_args(sp)
    sp.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="eval config override, e.g. checkpoint.run=demo, shards=[3], max_samples=8")
    sp.add_argument("--force", action="store_true", help="recompute even when the committed result matches")
    return p


def cmd_status(args: argparse.Namespace) -> int:
    from fourm_core.store import ArtifactStore

    from .ops import dataset_status, storage_options_from
    from .report import status_counts, status_table

    store = ArtifactStore(args.root, storage_options_from(args.storage_options), use_index=True)
    rows, record = dataset_status(store, args.dataset)
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
        return 0
    if not rows:
        print(f"nothing recorded for {args.dataset!r} under {store.root_uri}")
        return 1
    if record:
        print(f"latest run: flow run {record.get('flow_run_id') or '-'}, finished {record.get('finished')}, "
              f"stages {record.get('stages')}" + (f", shards {record['shards']}" if record.get("shards") else "")
              + (", forced" if record.get("force") else ""))
    print(status_table(rows))
    for r in rows:
        if r.state == "unreadable":  # the full path and error: the table clips details
            print(f"{r.detail}")
    _print_reruns(rows, args.dataset, store.root if store.is_local else store.root_uri)
    if record and record.get("not_run"):
        print(f"not run by the latest run (an earlier stage failed): {', '.join(record['not_run'])}")
    for stage, shards in ((record or {}).get("blocked") or {}).items():
        print(f"not run by the latest run (an input they read failed): {stage} shard(s) {shards}")
    print(f"\n{status_counts(rows)}  (store {store.root if store.is_local else store.root_uri})")
    return 0


def _print_reruns(rows: list, dataset: str, root: str) -> None:
    """The commands that redo every failed / missing / unreadable unit, one per stage."""
    from fourm_core.rerun import rerun_commands

    from .ops import dataset_name

    todo: dict[str, set[int | None]] = {}
    for r in rows:
        if r.state in ("failed", "missing", "unreadable"):
            todo.setdefault(r.stage, set()).add(r.shard)
    for stage, shards in todo.items():
        listed = sorted(s for s in shards if s is not None)
        cli, deployment = rerun_commands(dataset, stage, None if None in shards else listed, root, dataset_name(dataset))
        print(f"re-run {stage} ({len(shards)} shard(s)): {cli}\n    or: {deployment}")


def cmd_verify(args: argparse.Namespace) -> int:
    from fourm_core.rerun import rerun_commands
    from fourm_core.store import ArtifactStore

    from .ops import dataset_name, storage_options_from, verify_dataset

    store = ArtifactStore(args.root, storage_options_from(args.storage_options), use_index=True)
    checks = verify_dataset(store, args.dataset, args.stage, args.shard)
    bad = [c for c in checks if not c.ok]
    for c in bad:
        where = f"{c.dataset}/{c.artifact}" + ("" if c.shard is None else f" shard {c.shard}")
        print(f"BAD {where}:")
        for problem in c.problems:
            print(f"  {problem}")
        stage = c.stage or args.stage
        if stage:
            cli, deployment = rerun_commands(args.dataset, stage, c.shard, store.root if store.is_local else store.root_uri,
                                             dataset_name(args.dataset))
            print(f"  re-run: {cli}\n      or: {deployment}")
    print(f"{len(checks)} part(s) verified, {len(bad)} bad  (store {store.root_uri})")
    return 1 if bad else 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from .ops import lineage_text, storage_options_from

    print(lineage_text(args.part, args.root, storage_options_from(args.storage_options), args.depth))
    return 0


def run_flow(dataset: str, root: str, storage_options: dict[str, Any] | None, stages: list[str] | None,
             shards: list[int] | None, force: bool, ray_address: str | None,
             overrides: dict[str, Any] | None, pipeline: bool = True) -> dict[str, Any]:
    """Validate, then run build-dataset in this process (Prefect's ephemeral API unless PREFECT_API_URL is set)."""
    from .stages import get_stages

    config = load_dataset_config(dataset, overrides)  # fail fast, before paying for Prefect's start-up
    get_stages(list(stages or config.stages))
    # Laptop defaults for Prefect's ephemeral server (ignored when PREFECT_API_URL points at a server): a
    # busy 2-core box needs more than the default 20 s to start it, and nothing here may phone home.
    _prefect_defaults()
    from .build_dataset import build_dataset

    return build_dataset(dataset=dataset, store_root=root, storage_options=storage_options, stages=stages,
                         shards=shards, force=force, ray_address=ray_address, overrides=overrides or None,
                         pipeline=pipeline)


def _print_result(result: dict[str, Any]) -> None:
    print(f"build-dataset {result['dataset']}: {result['done']} units done, {result['cached']} cached "
          f"(run record {result['run_record']})")


def cmd_run(args: argparse.Namespace) -> int:
    from .ops import storage_options_from

    _print_result(run_flow(args.dataset, args.root, storage_options_from(args.storage_options), args.stages,
                           args.shards, args.force, args.ray_address, parse_overrides(args.set),
                           pipeline=not args.no_pipeline))
    return 0


def cmd_rerun(args: argparse.Namespace) -> int:
    from .ops import storage_options_from

    _print_result(run_flow(args.dataset, args.root, storage_options_from(args.storage_options), args.stage,
                           args.shard, True, args.ray_address, parse_overrides(args.set)))
    return 0


def _prefect_defaults() -> None:
    # Laptop defaults for Prefect's ephemeral server (ignored when PREFECT_API_URL points at a server).
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def run_pretrain_flow(config: str, root: str, storage_options: dict[str, Any] | None, steps: int | None = None,
                      log_dir: str | None = None, force: bool = False, overrides: dict[str, Any] | None = None,
                      nproc_per_node: int | None = None) -> dict[str, Any]:
    """Validate, then run the pretrain flow in this process."""
    from fourm_core.store import ArtifactStore
    from train_stage.config import load_train_config
    from train_stage.pretrain import check_token_shards

    over = dict(overrides or {})
    if steps:
        over["steps"] = steps
    cfg = load_train_config(config, over or None)  # fail fast, before paying for Prefect's start-up
    check_token_shards(ArtifactStore(root, storage_options), cfg)
    _prefect_defaults()
    from .pretrain import pretrain

    return pretrain(config=config, store_root=root, storage_options=storage_options, overrides=overrides or None,
                    steps=steps, log_dir=log_dir, force=force, nproc_per_node=nproc_per_node)


def _print_pretrain(result: dict[str, Any]) -> None:
    loss = ""
    if result.get("loss_start") is not None:
        loss = f", loss {result['loss_start']:.3f} -> {result['loss_end']:.3f}"
    print(f"pretrain {result['artifact']}: {result['status']} ({result['steps']} steps{loss})")
    print(f"  checkpoint: {result['checkpoint_dir']}")
    print(f"  manifest:   {result['manifest']}")
    print(f"  loss curve: {result['loss_png']}")
    print(f"  logs:       {result['log_dir']} (log.jsonl, tb/ for TensorBoard)")
    print(f"  lineage:    python -m pipelines lineage {result['manifest']}")


def cmd_pretrain(args: argparse.Namespace) -> int:
    from .ops import storage_options_from

    _print_pretrain(run_pretrain_flow(args.config, args.root, storage_options_from(args.storage_options), args.steps,
                                      args.log_dir, args.force, parse_overrides(args.set), args.nproc_per_node))
    return 0


# The demo's datasets, built in this order: `demo` (synthetic scenes + photos; its labels train the tokenizers and
# its tokens train pretrain/demo), then `demo-heldout` (scenes of another seed, tokenized with demo's tokenizers),
# on which evaluate/demo scores the checkpoint.
DEMO_DATASETS = ("demo", "demo-heldout")


def cmd_demo(args: argparse.Namespace) -> int:
    for dataset in DEMO_DATASETS:
        _print_result(run_flow(dataset, args.root, None, None, None, False, args.ray_address, None))
        print()
        rc = cmd_status(argparse.Namespace(dataset=dataset, root=args.root, storage_options=None, json=False))
        if rc:
            return rc
        print()
    if args.no_train:
        return 0
    _print_pretrain(run_pretrain_flow("demo", args.root, None, log_dir=args.log_dir))
    if demo_evaluation(args.root) is None:
        return 1
    return 0 if demo_chain(args.root) is not None else 1


def demo_chain(root: str, config: str = "demo") -> dict[str, Any] | None:
    """The demo's any-to-any example (eval_stage.chain): RGB -> semseg -> RGB and RGB -> caption -> RGB, a cached
    unit."""
    from eval_stage.chain import chain
    from eval_stage.config import load_eval_config
    from fourm_core.store import ArtifactStore

    store = ArtifactStore(root)
    try:
        result = chain(store, load_eval_config(config))
    except (FileNotFoundError, ValueError) as err:
        print(f"\nchained example not possible: {err}", file=sys.stderr)
        return None
    m = result.manifests[0]
    summary = result.summary()
    print(f"\nchain {m.dataset}/{m.artifact}: {summary['status']} in {summary['seconds']:.1f} s")
    print(f"  grid:   {store.uri(store.data_path(m.dataset, m.artifact, None, '.chain.png'))}")
    print(f"  report: {store.uri(store.data_path(m.dataset, m.artifact, None, '.chain.md'))}")
    for row in store.read_table(m.dataset, m.artifact, None, columns=["sample_key", "generated_caption"]).to_pylist():
        print(f"  {row['sample_key']}: RGB -> semseg -> RGB; RGB -> caption {row['generated_caption']!r} -> RGB")
    return summary


def run_evaluate(config: str, root: str, storage_options: dict[str, Any] | None, overrides: dict[str, Any] | None,
                 force: bool = False) -> dict[str, Any]:
    """Validate, then run the evaluate flow in this process (Prefect's ephemeral API unless PREFECT_API_URL is set)."""
    from eval_stage.config import load_eval_config

    load_eval_config(config, overrides)  # fail fast, before Prefect starts
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from .evaluate import evaluate

    return evaluate(config=config, store_root=root, storage_options=storage_options, overrides=overrides or None,
                    force=force)


def demo_evaluation(root: str, config: str = "demo", overrides: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The demo's last step: evaluate the pretrain/demo checkpoint when the store has one (else say so)."""
    from eval_stage.config import load_eval_config
    from eval_stage.checkpoints import find_checkpoint
    from fourm_core.store import ArtifactStore

    cfg = load_eval_config(config, overrides)
    if find_checkpoint(ArtifactStore(root), cfg) is None:
        ck = cfg.checkpoint
        print(f"\nno {ck.namespace}/checkpoints/{ck.run} checkpoint in {root} yet: evaluation skipped "
              f"(after pretrain: python -m pipelines evaluate {config} --root {root})")
        return None
    try:
        result = run_evaluate(config, root, None, overrides)
    except (FileNotFoundError, ValueError) as err:  # e.g. the store lacks every conditioning modality
        print(f"\nevaluation of the demo checkpoint not possible: {err}", file=sys.stderr)
        return None
    print()
    _print_evaluation(result)
    return result


def _print_evaluation(result: dict[str, Any]) -> None:
    from eval_stage.__main__ import summary_lines

    print("\n".join(summary_lines(result)))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .ops import storage_options_from

    _print_evaluation(run_evaluate(args.config, args.root, storage_options_from(args.storage_options),
                                   parse_overrides(args.set), args.force))
    return 0


COMMANDS = {"status": cmd_status, "lineage": cmd_lineage, "verify": cmd_verify, "run": cmd_run, "rerun": cmd_rerun,
            "pretrain": cmd_pretrain, "demo": cmd_demo, "evaluate": cmd_evaluate}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, FileNotFoundError, LookupError, ValueError) as err:
        # Operator mistakes (bad config, unknown stage/shard, wrong path): a message, not a traceback.
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # units failed after their retries; the store has the failure records
        print(f"failed: {err}\nsee: python -m pipelines status <dataset> --root <root>", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
