"""CLI of the tokenize stage.

    python -m tokenize_stage list
    python -m tokenize_stage synth  --tokenizer semseg_vqvae --profile tiny --store ./store --dataset synthetic --n 256
    python -m tokenize_stage train  --tokenizer semseg_vqvae --profile tiny --store ./store --dataset synthetic [--steps N]
    python -m tokenize_stage pretokenize --dataset demo --store ./store [--shard N ...] [--force]
    python -m tokenize_stage check EPFL-VILAB/4M_tokenizers_semseg_4k_224-448   (or a folder / s3:// prefix)
"""

from __future__ import annotations

import argparse
import json
import sys

from fourm_core.store import ArtifactStore


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tokenize_stage", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="tokenizers in the registry with their production/tiny shapes")
    for name in ("synth", "train"):
        s = sub.add_parser(name)
        s.add_argument("--tokenizer", required=True)
        s.add_argument("--profile", default="tiny", choices=["production", "tiny"])
        s.add_argument("--store", default="./store")
        s.add_argument("--dataset", default="synthetic")
        s.add_argument("--seed", type=int, default=0)
    synth = sub.choices["synth"]
    synth.add_argument("--n", type=int, default=256, help="samples")
    synth.add_argument("--shard-size", type=int, default=128)
    train = sub.choices["train"]
    train.add_argument("--steps", type=int, default=300)
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--lr", type=float, default=None)
    train.add_argument("--eval-samples", type=int, default=32)
    train.add_argument("--label", default=None)
    train.add_argument("--label-column", default=None)
    train.add_argument("--synthetic", type=int, default=0,
                       help="first commit N synthetic label samples (stand-in for the pseudo labelers)")
    train.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    train.add_argument("--force", action="store_true")
    train.add_argument("--layout", default="native", choices=["native", "ml4m"],
                       help="ml4m: the architecture of apple/ml-4m's released tokenizers")
    chk = sub.add_parser("check", help="load a tokenizer (ours or a released one) strictly and encode a sample")
    chk.add_argument("source", help="folder, s3:// prefix or hub id")
    chk.add_argument("--tokenizer", default=None, help="our name for a released tokenizer if its files do not tell")
    pre = sub.add_parser("pretokenize", help="the tokenize stage: token shards for a dataset's committed labels")
    pre.add_argument("--dataset", required=True, help="preset name (demo, cc12m, ...) or a dataset YAML path")
    pre.add_argument("--store", default="./store")
    pre.add_argument("--shard", type=int, action="append", help="shard index (repeatable); default: all")
    pre.add_argument("--force", action="store_true", help="recompute even if cached")
    args = p.parse_args(argv)

    if args.cmd == "pretokenize":
        from fourm_core import load_dataset_config

        from .stage import STAGE

        config, store = load_dataset_config(args.dataset), ArtifactStore(args.store)
        for shard in args.shard if args.shard is not None else STAGE.plan_shards(store, config):
            for r in STAGE.run_shard(store, config, shard, force=args.force):
                print(json.dumps(r.summary(), default=str), flush=True)
        return 0

    if args.cmd == "check":
        import torch

        from .models import from_pretrained
        from .synthetic import synthetic_batch

        tok = from_pretrained(args.source, tokenizer=args.tokenizer)  # strict: raises on any mismatch
        torch.manual_seed(0)
        tokens = tok.encode(synthetic_batch(tok.config, 2, seed=0))
        print(json.dumps({"source": args.source, "tokenizer": tok.config.name, "layout": tok.config.layout,
                          "architecture": tok.config.architecture, "strict_load": "ok",
                          "parameters": sum(p.numel() for p in tok.parameters()),
                          "tokens_shape": list(tokens.shape), "vocab": tok.vocab_size}, indent=2))
        return 0

    if args.cmd == "list":
        from .registry import PROFILES, tokenizer_config, tokenizer_specs

        for name, spec in sorted(tokenizer_specs().items()):
            shapes = ", ".join(f"{prof}: {c.n_tokens} tokens x {c.codebook_size} codes"
                               for prof in PROFILES for c in [tokenizer_config(name, prof)])
            print(f"{name:28s} {','.join(spec.modalities):40s} {shapes}")
        return 0

    store = ArtifactStore(args.store)
    from .labels import commit_synthetic_labels

    if args.cmd == "synth" or args.synthetic:
        n = args.n if args.cmd == "synth" else args.synthetic
        shard_size = args.shard_size if args.cmd == "synth" else 128
        ms = commit_synthetic_labels(store, args.dataset, args.tokenizer, args.profile, n, shard_size, args.seed)
        print(f"committed {len(ms)} synthetic label shard(s): {', '.join(m.uri for m in ms)}", file=sys.stderr)
        if args.cmd == "synth":
            return 0

    from .train_tokenizer import TrainTokenizerConfig, train_tokenizer

    cfg = TrainTokenizerConfig(tokenizer=args.tokenizer, profile=args.profile, steps=args.steps,
                               batch_size=args.batch_size, lr=args.lr, seed=args.seed, eval_samples=args.eval_samples,
                               label=args.label, label_column=args.label_column, device=args.device,
                               layout=args.layout)
    result = train_tokenizer(store, args.dataset, cfg, force=args.force)
    summary = result.summary()
    summary["metrics"] = result.manifests[0].stats.get("metrics") if result.manifests else None
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
