"""The ``4m21-official`` preset on a tiny demo store: pseudo labels, then the released tokenizers (tiny
official-format instances: the reference fixtures where their widths fit the tiny labelers, the rest built
in the ml4m layout and written in the release format) committed by import-tokenizers through the real
loading path instead of training; the token shards are what those tokenizers give."""

import shutil
from pathlib import Path

import numpy as np
import torch

from fourm_core.config import load_dataset_config
from fourm_core.modalities import MODALITIES
from fourm_core.store import ArtifactStore
from pipelines.stages import get_stages
from tokenize_stage.crops import apply_crop, crop_for
from tokenize_stage.labels import iter_label_rows
from pseudolabel.registry import labeler_class
from tokenize_stage.models import build_tokenizer, from_pretrained
from tokenize_stage.models.ml4m import save_ml4m
from tokenize_stage.registry import tokenizer_config
from tokenize_stage.normalize import normalize
from tokenize_stage.stage import pretokenize_config

TINY = Path(__file__).parents[1] / "fixtures" / "ml4m" / "tokenizers" / "tiny"
# tiny fixtures whose input widths match the tiny labelers (CLIP projection 16, 134 classes, 64² masks, 207-d poses)
OFFICIAL = {"clip_vqvae": ("clip_feature", "4M_tokenizers_CLIP-B16_8k_224-448"),
            "semseg_vqvae": ("semseg", "4M_tokenizers_semseg_4k_224-448"),
            "mask_vq": ("sam_mask", "4M_tokenizers_sam-instance_1k_64"),
            "pose_vq": ("human_poses", "4M_tokenizers_human-poses_1k_8")}
LABELERS = ["canny", "depth", "normals", "semseg", "clip", "dinov2", "imagebind", "sam", "detection", "human_poses"]


def _tiny_width(label: str) -> int | None:
    """Channel width of a tiny labeler's feature / global output (from its schema's byte width)."""
    for name in LABELERS:
        cls = labeler_class(name)
        if label in cls.outputs:
            lab = cls()
            lab.model = cls().seeded_tiny()  # schema sizes come from the loaded model
            field = lab.schema()[label].field(0)
            grid = MODALITIES[next(m for m in MODALITIES if MODALITIES[m].label == label)].grid
            cells = grid[0] * grid[1] if label.endswith("_features") else 1
            return field.type.byte_width // (2 * cells)
    return None


def test_4m21_official_preset_tokenizes_with_released_tokenizers(tmp_path):
    sources = {}
    for name, (fixture, repo) in OFFICIAL.items():  # the released file layout, under hub-like folder names
        shutil.copytree(TINY / fixture, tmp_path / "hub" / repo, ignore=shutil.ignore_patterns("vectors.*"))
        sources[name] = str(tmp_path / "hub" / repo)
    for m in MODALITIES.values():  # every other released tokenizer: built tiny in the ml4m layout, exported
        name = m.tokenizer.split("+")[-1] if m.tokenizer else None
        if not name or name == "wordpiece" or name in sources:
            continue
        config = tokenizer_config(name, "tiny", layout="ml4m")
        width = _tiny_width(m.label) if config.target in ("features", "global") else None
        if width:
            config = config.model_copy(update={"in_dim": width} if config.target == "global"
                                       else {"in_channels": width, "out_channels": width})
        torch.manual_seed(0)
        sources[name] = str(save_ml4m(build_tokenizer(config), tmp_path / "hub" / f"4M_tokenizers_{name}"))
    preset = load_dataset_config("4m21-official")
    assert "train-tokenizers" not in preset.stages and "import-tokenizers" in preset.stages
    assert set(pretokenize_config(preset).official) == {m.tokenizer.split("+")[-1] for m in MODALITIES.values()
                                                         if m.tokenizer and m.tokenizer != "wordpiece"}
    config = load_dataset_config("4m21-official", {
        "sources": [{"kind": "synthetic", "n_samples": 6, "seed": 0, "size": 64}],
        "ingest.shard_size": 3, "ingest.shorter_side": 64,
        "pseudolabel.profile": "tiny", "pseudolabel.runner": "local",
        "pseudolabel.labelers": LABELERS,
        "pseudolabel.settings": {"sam": {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.6,
                                         "stability_score_offset": 0.5},
                                 "detection": {"threshold": 0.0, "max_detections": 4, "input_size": 64}},
        "tokenize.profile": "tiny", "tokenize.official": sources})
    store = ArtifactStore(str(tmp_path / "store"))
    for spec in get_stages(config.stages):
        for shard in spec.plan_shards(store, config):
            spec.run_shard(store, config, shard)

    for name, source in sources.items():  # committed where tokenize looks, with the source in the lineage
        manifest = store.read_manifest(config.name, f"tokenizers/{name}-tiny", None)
        assert manifest is not None and manifest.ingredients.model.source == source
    shards = store.committed_shards(config.name, "images")
    assert shards == [0, 1]
    for m in MODALITIES.values():  # every token modality of 4M-21 whose labeler ran (all but T5 / palette / metadata)
        if m.tokenizer and m.labeler in LABELERS + ["ingest"]:
            assert store.committed_shards(config.name, m.token_artifact) == shards, m.name
    assert not store.committed_shards(config.name, "labels/clip_features")  # fused: no raw features kept

    # the stored semseg tokens are the released tokenizer's encoding of the shard's labels
    released = from_pretrained(sources["semseg_vqvae"])
    cfg = pretokenize_config(config)
    table = store.read_table(config.name, MODALITIES["tok_semseg@224"].token_artifact, 0).to_pylist()
    stored = {(r["sample_key"], r["crop"]): r["tokens"] for r in table}
    for key, raw in iter_label_rows(store, config.name, "semseg", 0):
        x = normalize("semseg", apply_crop(raw, crop_for(cfg.crops, key, 0), "semseg"), released.config.image_size)
        with torch.no_grad():
            expected = released.encode(x[None])[0].numpy()
        np.testing.assert_array_equal(np.asarray(stored[(key, 0)]), expected)
    clip = store.read_table(config.name, MODALITIES["tok_clip@224"].token_artifact, 0).column("tokens").to_pylist()
    assert all(len(t) == 16 and max(t) < 64 for t in clip)  # the fixture's 4x4 grid, 64 codes

    again = [r.status.value for r in get_stages(["import-tokenizers"])[0].run_shard(store, config, 0)]
    assert again == ["cached"] * len(sources)
