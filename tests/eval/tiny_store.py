"""A small but real store for the evaluation stage, built through the stages' own code paths.

ingest (synthetic scenes with exact ground truth) -> pseudo labels derived from the ground truth (depth,
normals, semseg with noise; Canny edges of the RGB) -> tiny tokenizers with a 14x14 token grid (the
model's grid), committed like ``train_tokenizer`` commits them -> the tokenize stage -> a tiny 4M
checkpoint from the trainer. ``tokenizer_steps`` / ``train_steps`` = 0 / small keeps it fast for tests;
larger values give numbers worth reading (``python -m tests.eval.tiny_store ROOT``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa

@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` within the block (builds and training here are sized for it)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


MODALITIES = ["tok_canny_edge@224", "tok_depth@224", "tok_normal@224", "tok_semseg@224", "tok_dinov2_global", "det",
              "caption"]
TOKENIZERS = {"tok_rgb@224": "rgb_diffusion", "tok_canny_edge@224": "edge_diffusion", "tok_depth@224": "depth_diffusion",
              "tok_normal@224": "normal_diffusion", "tok_semseg@224": "semseg_vqvae",
              "tok_dinov2_global": "dinov2_global_memcodes"}
LABELS = {"rgb_diffusion": "images", "edge_diffusion": "canny_edge", "depth_diffusion": "depth", "normal_diffusion": "normal",
          "semseg_vqvae": "semseg", "dinov2_global_memcodes": "dinov2_global"}
# Stand-in for DINOv2's global embedding in this fixture: a fixed random projection of the 8x8 RGB thumbnail
_EMBED = np.random.default_rng(1234).standard_normal((8 * 8 * 3, 768)).astype(np.float32) / np.sqrt(192)


def dataset_yaml(path: Path, name: str, n_samples: int, shard_size: int, size: int, seed: int = 0,
                 tokenizer_dataset: str | None = None, modalities: list[str] = MODALITIES) -> Path:
    path.write_text(
        f"name: {name}\n"
        f"sources:\n  - {{kind: synthetic, n_samples: {n_samples}, seed: {seed}, size: {size}}}\n"
        f"ingest: {{shard_size: {shard_size}, shorter_side: {size}}}\n"
        f"stages: [ingest, tokenize]\n"
        f"tokenize:\n  profile: tiny\n  modalities: {json.dumps(modalities)}\n"
        f"  crops: {{n_crops: 1}}\n  batch_size: 16\n"
        + (f"  tokenizer_dataset: {tokenizer_dataset}\n" if tokenizer_dataset else ""))
    return path


def _commit_labels(store, dataset: str, shard: int, seed: int = 0) -> None:
    import cv2

    from fourm_core.image_decode import decode_image
    from fourm_core.label_codec import encode_label, npy_decode
    from fourm_core.modalities import label_artifact
    from fourm_core.units import Unit, UnitOutput, run_unit

    gt = store.read_table(dataset, "ground_truth", shard).to_pylist()
    images = {r["sample_key"]: decode_image(r["image"]) for r in store.read_table(dataset, "images", shard).to_pylist()}
    rng = np.random.default_rng([seed, shard])
    rows: dict[str, list] = {lab: [] for lab in LABELS.values() if lab != "images"}  # RGB: the ingested images
    rows["det"] = []
    for r in gt:
        k = r["sample_key"]
        depth, normal, semseg = npy_decode(r["depth"]), npy_decode(r["normal"]), npy_decode(r["semseg"])
        noisy = semseg.copy()
        flip = rng.random(semseg.shape) < 0.05
        noisy[flip] = rng.choice(np.unique(semseg), int(flip.sum()))
        thumb = cv2.resize(images[k], (8, 8), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0 - 0.5
        arrays = {"dinov2_global": (thumb.reshape(-1) @ _EMBED).astype(np.float32),
                  "depth": depth * (1 + 0.05 * rng.standard_normal(depth.shape)).astype(np.float32),
                  "normal": normal, "semseg": noisy,
                  "canny_edge": (cv2.Canny(cv2.cvtColor(images[k], cv2.COLOR_RGB2GRAY), 100, 200) > 0).astype(np.uint8) * 255}
        for lab, a in arrays.items():
            rows[lab].append({"sample_key": k, **encode_label(lab, a)})
        # the detector's stand-in: ground-truth boxes, jittered by ~1 % of the image, scored 0.9
        boxes = [{"xyxy": np.clip(np.asarray(b["xyxy"]) + 0.01 * rng.standard_normal(4), 0, 1).tolist(),
                  "class_name": b["class"], "score": 0.9} for b in json.loads(r["boxes"])]
        rows["det"].append({"sample_key": k, "det": json.dumps({"boxes": [b for b in boxes if b["xyxy"][2] > b["xyxy"][0]
                                                                          and b["xyxy"][3] > b["xyxy"][1]]})})
    inputs = [store.read_manifest(dataset, "ground_truth", shard).as_input()]
    for lab, rs in rows.items():
        unit = Unit(stage="test.labels", dataset=dataset, artifacts=[label_artifact(lab)], shard=shard,
                    code_version="test/1", config={"label": lab, "seed": seed}, inputs=inputs)
        run_unit(store, unit, lambda rs=rs, lab=lab: UnitOutput({label_artifact(lab): pa.Table.from_pylist(rs)}))


def _commit_tokenizer(store, dataset: str, name: str, steps: int, image_size: int = 28, patch_size: int = 2) -> None:
    """A tiny tokenizer with a 14x14 grid (28 px, 2-px patches), optionally trained on the committed labels."""
    import torch

    from fourm_core.units import Unit, UnitOutput, run_unit
    from tokenize_stage.labels import read_label_arrays
    from tokenize_stage.models.hub import build_tokenizer
    from tokenize_stage.normalize import normalize_batch
    from tokenize_stage.registry import tokenizer_config
    from tokenize_stage.train_tokenizer import TrainTokenizerConfig, fit, tokenizer_artifact

    tcfg = tokenizer_config(name, "tiny")
    if hasattr(tcfg, "patch_size"):  # image tokenizers: the model's 14x14 grid
        tcfg = tcfg.model_copy(update={"image_size": image_size, "patch_size": patch_size})
    artifact = tokenizer_artifact(name, "tiny")
    _, arrays, manifests = read_label_arrays(store, dataset, LABELS[name])
    unit = Unit(stage="test.tokenizer", dataset=dataset, artifacts=[artifact], shard=None, code_version="test/1",
                config={"tokenizer": tcfg.model_dump(mode="json"), "steps": steps},
                inputs=[m.as_input() for m in manifests])

    def compute() -> UnitOutput:
        torch.manual_seed(0)
        model = build_tokenizer(tcfg)
        if steps:
            fit(model, normalize_batch(tcfg, arrays), TrainTokenizerConfig(tokenizer=name, profile="tiny", steps=steps,
                                                                        batch_size=16, warmup_steps=5))
        model.eval()
        files = {".safetensors": model.weights_bytes(), ".config.json": json.dumps(model.config_dict()).encode()}
        return UnitOutput({artifact: pa.table({"step": [steps]})}, extra_files={artifact: files})

    run_unit(store, unit, compute)


def build(root: str, dataset: str = "ev", n_samples: int = 12, shard_size: int = 6, size: int = 64,
          tokenizer_steps: int = 0, train_steps: int = 2, batch_size: int = 4, dim: int = 32,
          run: str = "tiny", workdir: Path | None = None, heldout: int = 0, modalities: list[str] = MODALITIES,
          blr: float = 0.02):
    """Build the store under ``root``; returns (store, checkpoint manifest).

    ``heldout`` > 0 also builds ``<dataset>-heldout``: that many scenes of another seed, tokenized with the
    tokenizers of ``dataset``, which the checkpoint never sees."""
    from fourm_core.config import load_dataset_config
    from fourm_core.store import ArtifactStore
    from ingest_stage.stage import STAGE as INGEST
    from tokenize_stage.stage import STAGE as TOKENIZE
    from train_stage.config import TrainConfig
    from train_stage.pretrain import pretrain

    store = ArtifactStore(root)
    workdir = Path(workdir or root)
    workdir.mkdir(parents=True, exist_ok=True)
    config = load_dataset_config(dataset_yaml(workdir / f"{dataset}.yaml", dataset, n_samples, shard_size, size,
                                              modalities=modalities))
    shards = INGEST.plan_shards(store, config)
    for s in shards:
        INGEST.run_shard(store, config, s)
        _commit_labels(store, dataset, s)
    for name in (TOKENIZERS[m] for m in modalities if m in TOKENIZERS):  # det, caption: the vendored WordPiece
        _commit_tokenizer(store, dataset, name, tokenizer_steps)
    for s in TOKENIZE.plan_shards(store, config):
        TOKENIZE.run_shard(store, config, s)
    if heldout:
        name = f"{dataset}-heldout"
        hcfg = load_dataset_config(dataset_yaml(workdir / f"{name}.yaml", name, heldout, shard_size, size, seed=1,
                                                tokenizer_dataset=dataset, modalities=modalities))
        for s in INGEST.plan_shards(store, hcfg):
            INGEST.run_shard(store, hcfg, s)
            _commit_labels(store, name, s)
        for s in TOKENIZE.plan_shards(store, hcfg):
            TOKENIZE.run_shard(store, hcfg, s)
    cfg = TrainConfig.model_validate({
        "run_name": run, "model": {"size": "tiny", "modalities": modalities,
                                   "overrides": {"dim": dim, "num_heads": 2 if dim < 64 else 4}},
        "mixture": "demo", "datasets": [{"name": dataset}], "batch_size": batch_size, "steps": train_steps,
        "blr": blr, "grad_clip": 1.0, "log_every": max(1, train_steps // 10), "dtype": "fp32"})
    return store, pretrain(store, cfg)


if __name__ == "__main__":  # a store worth reading numbers from (minutes on 2 cores)
    import sys

    root = sys.argv[1]
    build(root, n_samples=int(sys.argv[2]) if len(sys.argv) > 2 else 96, shard_size=16, size=64,
          tokenizer_steps=int(sys.argv[3]) if len(sys.argv) > 3 else 150,
          train_steps=int(sys.argv[4]) if len(sys.argv) > 4 else 300, batch_size=16, dim=64, heldout=32)
