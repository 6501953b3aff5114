"""CLI: ``python -m train_stage train --config demo --store ./store`` (also under torchrun).

Commands: ``train`` (resumes the run's latest checkpoint made with the same cache key), ``demo`` (the
tiny preset on the demo token shards that ``python -m pipelines demo`` commits), ``synthetic`` (commit
synthetic token shards under a dataset name of your choice; never ``demo``, which is the real one),
``import-pretrained`` (a released checkpoint committed as ``checkpoints/<run>/step-00000000``).
"""

from __future__ import annotations

import argparse
import json

from fourm_core.store import ArtifactStore


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m train_stage")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="pre-train per a train config (preset name or YAML)")
    t.add_argument("--config", default="demo")
    t.add_argument("--store", default="./store")
    t.add_argument("--storage-options", default=None, help="JSON object of fsspec storage options")
    t.add_argument("--log-dir", default=None)
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="override a config field")
    t.add_argument("--force", action="store_true", help="ignore cached and existing checkpoints")
    d = sub.add_parser("demo", help="tiny model on the demo token shards (python -m pipelines demo makes them)")
    d.add_argument("--store", default="./store")
    d.add_argument("--log-dir", default="./runs/demo")
    d.add_argument("--steps", type=int, default=None)
    s = sub.add_parser("synthetic", help="commit synthetic token shards")
    s.add_argument("--store", default="./store")
    s.add_argument("--dataset", default="synthetic")
    s.add_argument("--modalities", nargs="+", required=True)
    s.add_argument("--shards", type=int, default=2)
    i = sub.add_parser("import-pretrained", help="commit a released 4M checkpoint (dir, s3://, hub id) as a "
                                                 "store checkpoint, for evaluation and fine-tuning")
    i.add_argument("source")
    i.add_argument("--run", required=True, help="run name it is committed under (checkpoints/<run>/step-00000000)")
    i.add_argument("--store", default="./store")
    i.add_argument("--storage-options", default=None, help="JSON object of fsspec storage options")
    args = ap.parse_args(argv)
    options = json.loads(args.storage_options) if getattr(args, "storage_options", None) else None
    store = ArtifactStore(args.store, options)
    if args.cmd == "train":
        from .config import load_train_config
        from .pretrain import pretrain

        overrides = {k: json.loads(v) for k, v in (x.split("=", 1) for x in args.set)}
        if args.steps:
            overrides["steps"] = args.steps
        m = pretrain(store, load_train_config(args.config, overrides), log_dir=args.log_dir, force=args.force)
        print(json.dumps({"checkpoint": m.uri if m else None, "cache_key": m.cache_key if m else None}))
    elif args.cmd == "demo":
        from .pretrain import pretrain_demo

        m = pretrain_demo(store, args.log_dir, args.steps)
        print(json.dumps({"checkpoint": m.uri, "loss": m.stats.get("loss")}))
    elif args.cmd == "import-pretrained":
        from .released import import_pretrained

        m = import_pretrained(store, args.source, args.run, storage_options=options)
        print(json.dumps({"checkpoint": m.uri, "digest": m.digest}))
    else:
        from .synthetic import make_token_shards

        if args.dataset == "demo":
            ap.error("dataset 'demo' holds the real demo token shards; give synthetic ones another name")
        make_token_shards(store, args.dataset, args.modalities, n_shards=args.shards)


if __name__ == "__main__":
    main()
