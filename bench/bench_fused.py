"""Fused feature labelling + tokenization vs the two-pass path (stored features, then tokenize).

    PYTHONPATH=. python bench/bench_fused.py --labeler dinov2 --profile tiny --n 32
    PYTHONPATH=. python bench/bench_fused.py --labeler dinov2 --profile full --n 8

One store, `images` shards of n 224² images. The tokenizers (tiny profile: their cost is small next to the
labeler's) are trained first on a separate feature-subset shard; both paths then run once on a warm-up shard
(model load, weights digest, first-call kernels), and are timed on fresh shards:
``two-pass`` = pseudolabel ``run_shard`` (labeler, commit of the raw features) + tokenize's token units;
``fused`` = tokenize's fused unit (labeler on each crop, tokenizer, commit of tokens only). Printed: seconds,
images/s, and bytes written per sample (Parquet as committed).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _bytes(store, dataset: str, artifacts: list[str], shard: int) -> int:
    total = 0
    for a in artifacts:
        m = store.read_manifest(dataset, a, shard)
        total += sum(f.bytes for f in m.files) if m else 0
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--labeler", default="dinov2", choices=["dinov2", "clip", "imagebind"])
    p.add_argument("--profile", default="tiny", choices=["tiny", "full"])
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from bench.bench_labelers import images
    from fourm_core import ArtifactStore, DatasetConfig
    from fourm_core.modalities import MODALITIES
    from pseudolabel.registry import labeler_class
    from pseudolabel.stage import run_shard as pseudolabel_shard
    from pseudolabel.testing import commit_images
    from tokenize_stage.registry import sub_tokenizer
    from tokenize_stage.stage import STAGE
    from tokenize_stage.train_tokenizer import TrainTokenizerConfig, train_tokenizer

    root = tempfile.mkdtemp(prefix="bench-fused-")
    store = ArtifactStore(root)
    cls = labeler_class(a.labeler)
    model = "tiny"
    if a.profile == "full":
        model = os.path.join(root, "_model")
        cls().save(cls().build_full(), model)
    imgs = images(a.n)
    samples = lambda shard: [(f"b{shard}-{i:04d}", im, "a photo") for i, im in enumerate(imgs)]  # noqa: E731
    commit_images(store, "bench", 0, samples(0)[: max(12, min(a.n, 16))])
    for shard in (1, 2, 3, 4):
        commit_images(store, "bench", shard, samples(shard))

    def config(feature_shards: list[int]) -> DatasetConfig:
        return DatasetConfig(name="bench", sources=[{"kind": "synthetic"}],
                             pseudolabel={"labelers": [a.labeler], "runner": "local", "profile": "tiny",
                                          "settings": {a.labeler: {"model": model, "torch_threads": a.threads}},
                                          "feature_subset": {"shards": feature_shards}},
                             tokenize={"profile": "tiny"})

    mods = [m for m in MODALITIES.values() if m.label in cls.outputs and m.tokenizer]
    pseudolabel_shard(store, config([0]), 0)  # the tokenizers' training subset
    for m in mods:
        train_tokenizer(store, "bench", TrainTokenizerConfig(tokenizer=sub_tokenizer(m.tokenizer), profile="tiny",
                                                             steps=5, eval_samples=4))

    two, fused = config([0, 1, 3]), config([0])  # shards 1, 3: features stored, then tokenized; 2, 4: fused
    pseudolabel_shard(store, two, 1)  # warm-up
    STAGE.run_shard(store, two, 1)
    STAGE.run_shard(store, fused, 2)
    t = time.perf_counter()
    pseudolabel_shard(store, two, 3)
    t_label = time.perf_counter() - t
    STAGE.run_shard(store, two, 3)
    t_two = time.perf_counter() - t
    t = time.perf_counter()
    STAGE.run_shard(store, fused, 4)
    t_fused = time.perf_counter() - t

    labels = [f"labels/{o}" for o in cls.outputs]
    tokens = [m.token_artifact for m in mods]
    b_two = _bytes(store, "bench", labels + tokens, 3) / a.n
    b_fused = _bytes(store, "bench", labels + tokens, 4) / a.n
    print(f"{a.labeler} ({a.profile}), {a.n} images at 224², {a.threads} threads; tokens: "
          f"{', '.join(m.name for m in mods)}")
    print(f"{'path':<10} {'seconds':>8} {'img/s':>7} {'bytes/sample':>13}")
    print(f"{'two-pass':<10} {t_two:8.2f} {a.n / t_two:7.2f} {b_two:13.0f}   (labelling alone {t_label:.2f} s)")
    print(f"{'fused':<10} {t_fused:8.2f} {a.n / t_fused:7.2f} {b_fused:13.0f}")
    print(f"fused / two-pass: time {t_fused / t_two:.2f}, bytes {b_fused / b_two:.3f}")


if __name__ == "__main__":
    main()
