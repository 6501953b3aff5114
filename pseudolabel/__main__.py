"""CLI: ``python -m pseudolabel --dataset demo --root ./store [--labelers depth,canny] [--shard N] [--force]``,
``python -m pseudolabel show --dataset demo --root ./store --sample KEY --out sample.png`` and
``python -m pseudolabel save-tiny --labeler depth --out DIR`` (a tiny random-weight checkpoint),
``python -m pseudolabel convert-sam sam_vit_h_4b8939.pth DIR`` and
``python -m pseudolabel convert-hmr2 hmr2.safetensors DIR`` and
``python -m pseudolabel convert-omnidata omnidata_dpt_depth_v2.ckpt DIR --task depth`` and
``python -m pseudolabel convert-imagebind imagebind_huge.pth DIR`` and
``python -m pseudolabel convert-vitdet model_final.pkl DIR`` (released checkpoints -> the labelers' model dirs)."""

from __future__ import annotations

import argparse
import json
import sys


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="preset name (demo, cc12m, ...) or a dataset YAML path")
    p.add_argument("--root", default="./store", help="store root: a folder or s3://bucket/prefix")


def _convert_sam(a: argparse.Namespace) -> None:
    from .sam.model import load_sam, save_sam

    loaded = load_sam(a.checkpoint)
    save_sam(loaded.model, a.out, loaded.profile)


def _convert_hmr2(a: argparse.Namespace) -> None:
    from .humans import load_hmr2_checkpoint, save_pose_model

    save_pose_model(load_hmr2_checkpoint(a.checkpoint), a.out)


def _convert_omnidata(a: argparse.Namespace) -> None:
    from .labelers import omnidata

    omnidata.convert_checkpoint(a.checkpoint, a.out, a.task, omnidata.PROFILES[a.profile])


def _convert_imagebind(a: argparse.Namespace) -> None:
    from fourm_core.checkpoints import read_state_dict

    from .labelers import imagebind

    state = read_state_dict(a.checkpoint)  # every modality: the vision trunk is kept
    model = imagebind.build_vit(imagebind.FULL if a.profile == "full" else imagebind.TINY)
    model.load_state_dict(imagebind.convert_imagebind_state_dict(state), strict=True)
    imagebind.ImageBindLabeler().save(model, a.out)


def _convert_vitdet(a: argparse.Namespace) -> None:
    from .detection.vitdet_convert import convert_checkpoint

    convert_checkpoint(a.checkpoint, a.out, a.profile)


# command -> (what the checkpoint argument is, converter)
CONVERTERS = {
    "convert-sam": ("sam_vit_h_4b8939.pth (.pth / .safetensors state dict)", _convert_sam),
    "convert-hmr2": ("HMR2.0 .ckpt or .safetensors", _convert_hmr2),
    "convert-omnidata": ("omnidata_dpt_depth_v2.ckpt / omnidata_dpt_normal_v2.ckpt (.ckpt / .pth / .safetensors)",
                         _convert_omnidata),
    "convert-imagebind": ("imagebind_huge.pth (a plain state dict of every modality)", _convert_imagebind),
    "convert-vitdet": ("detectron2's COCO cascade_mask_rcnn_vitdet_h model_final_*.pkl (or .pth / .safetensors)",
                       _convert_vitdet),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["show"]:
        p = argparse.ArgumentParser(prog="python -m pseudolabel show", description="render one sample's labels")
        _common(p)
        p.add_argument("--sample", required=True, help="sample_key")
        p.add_argument("--out", default="sample.png")
        a = p.parse_args(argv[1:])
        from fourm_core import ArtifactStore, load_dataset_config

        from .viewer import render_sample

        cfg = load_dataset_config(a.dataset)
        print(render_sample(ArtifactStore(a.root), cfg.name, a.sample, a.out))
        return 0
    if argv[:1] == ["save-tiny"]:
        p = argparse.ArgumentParser(prog="python -m pseudolabel save-tiny")
        p.add_argument("--labeler", required=True)
        p.add_argument("--out", required=True)
        a = p.parse_args(argv[1:])
        from .registry import labeler_class

        lab = labeler_class(a.labeler)()
        lab.save(lab.seeded_tiny(), a.out)
        print(a.out)
        return 0

    if argv[:1] and argv[0] in CONVERTERS:
        checkpoint_help, convert = CONVERTERS[argv[0]]
        p = argparse.ArgumentParser(prog=f"python -m pseudolabel {argv[0]}",
                                    description="convert a released checkpoint into a labeler model directory")
        p.add_argument("checkpoint", help=checkpoint_help)
        p.add_argument("out", help="directory to write (safetensors weights + config)")
        if argv[0] == "convert-omnidata":
            p.add_argument("--task", choices=["depth", "normal"], required=True)
        if argv[0] in ("convert-omnidata", "convert-imagebind", "convert-vitdet"):
            p.add_argument("--profile", choices=["full", "tiny"], default="full", help="network size (tiny: tests)")
        a = p.parse_args(argv[1:])
        convert(a)
        print(a.out)
        return 0

    p = argparse.ArgumentParser(prog="python -m pseudolabel", description="run the pseudolabel stage")
    _common(p)
    p.add_argument("--labelers", help="comma-separated subset of the configured labelers to run")
    p.add_argument("--shard", type=int, action="append", help="shard index (repeatable); default: all")
    p.add_argument("--force", action="store_true", help="recompute even if cached")
    p.add_argument("--runner", choices=["ray", "local"], help="override pseudolabel.runner")
    p.add_argument("--profile", choices=["production", "tiny", "oracle"], help="override pseudolabel.profile")
    a = p.parse_args(argv)

    from fourm_core import ArtifactStore, load_dataset_config

    from .stage import PseudolabelUnitsFailed, plan_shards, run_shard

    cfg = load_dataset_config(a.dataset)
    store = ArtifactStore(a.root)
    overrides = {k: v for k, v in (("runner", a.runner), ("profile", a.profile)) if v}
    only = a.labelers.split(",") if a.labelers else None
    shards = a.shard if a.shard is not None else plan_shards(store, cfg)
    if not shards:
        print(f"no committed images shards for {cfg.name} under {a.root}; run ingest first", file=sys.stderr)
        return 1
    failed = False
    for shard in shards:
        try:
            results = run_shard(store, cfg, shard, force=a.force, labelers=only, overrides=overrides)
        except PseudolabelUnitsFailed as exc:
            results, failed = exc.results, True
        for r in results:
            print(json.dumps(r.summary()))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
