"""Fused feature labelling + tokenization: raw feature maps never stored outside the feature subset.

CLIP, DINOv2 and ImageBind feature maps are ~200–650 KB per sample in fp16, so the pseudolabel stage
writes them only for ``pseudolabel.feature_subset`` (the shards the tokenizers train on). For every other
shard, the ``tokenize`` stage runs the feature labeler itself on each crop of the RGB image and encodes the
result with the committed tokenizer in the same pass (the same Ray task), committing only the token shards.

Cropping the image before the labeler (rather than cropping a stored feature map, as the two-pass path
must) is what 4M does: the features describe exactly the pixels of the crop. One unit per labeler and
shard commits every token modality of that labeler (DINOv2: patch tokens and the global tokens); its cache
key holds the labeler's config and weights digest, the tokenizers' digests, the crop settings and the
images shard's digest.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from fourm_core.config import DatasetConfig
from fourm_core.image_decode import decode_image
from fourm_core.label_codec import decode_label
from fourm_core.modalities import MODALITIES, Modality
from fourm_core.store import ArtifactStore
from fourm_core.units import SampleError, Unit, UnitOutput, UnitResult, run_unit

from .committed import load_committed, tokenizer_ref
from .crops import apply_crop, crop_for
from .normalize import normalize
from .registry import TOKEN_KINDS, sub_tokenizer
from .train_tokenizer import tokenizer_artifact

CODE_VERSION = "tokenize.fused/2"  # 2: keyed on the labeler's code version (CLIP/ImageBind inputs changed)
IMAGES = "images"


def _pseudolabel(config: DatasetConfig):
    from pseudolabel.config import pseudolabel_config

    return pseudolabel_config(config)


def fused_modalities(store: ArtifactStore, config: DatasetConfig, cfg, shard: int) -> dict[str, list[Modality]]:
    """labeler -> the token modalities it makes fused on ``shard``: heavy-output labelers of the dataset's
    pseudolabel config, on a shard outside the feature subset, for modalities with a committed tokenizer
    and no committed label shard here."""
    if not cfg.fused or not config.pseudolabel:
        return {}
    pl = _pseudolabel(config)
    if pl.feature_subset.contains(shard) or store.input_ref(config.name, IMAGES, shard) is None:
        return {}
    from pseudolabel.registry import labeler_class

    ns = cfg.tokenizer_dataset or config.name
    wanted = set(cfg.modalities) if cfg.modalities is not None else None
    out: dict[str, list[Modality]] = {}
    for name in pl.labelers:
        cls = labeler_class(name, tuple(pl.plugins))
        if not cls.heavy_output:
            continue
        mods = [m for m in MODALITIES.values()
                if m.kind in TOKEN_KINDS and m.label in cls.outputs and m.tokenizer
                and (wanted is None or m.name in wanted)
                and store.read_manifest(ns, tokenizer_artifact(sub_tokenizer(m.tokenizer), cfg.profile), None)
                and store.input_ref(config.name, m.label_artifact, shard) is None]
        if mods:
            out[name] = mods
    return out


def fused_unit(store: ArtifactStore, config: DatasetConfig, cfg, shard: int, labeler: str, mods: list[Modality],
               force: bool = False) -> UnitResult:
    """Label every crop of the shard's images with ``labeler`` and tokenize its outputs ``mods`` (module doc)."""
    from pseudolabel.registry import labeler_class
    from pseudolabel.spec import Batch

    pl = _pseudolabel(config)
    cls = labeler_class(labeler, tuple(pl.plugins))
    lab = cls(pl.settings_for(labeler), available=frozenset(cls.outputs))
    lab_ref = lab.model_ref()
    ns = cfg.tokenizer_dataset or config.name
    refs = {m.name: tokenizer_ref(store, ns, sub_tokenizer(m.tokenizer), cfg.profile) for m in mods}
    images = store.input_ref(config.name, IMAGES, shard)
    unit = Unit(stage="tokenize.fused", dataset=config.name, artifacts=[m.token_artifact for m in mods], shard=shard,
                code_version=CODE_VERSION, model=lab_ref, inputs=[images],
                config={"labeler": labeler, "labeler_code_version": cls.code_version,
                        "labeler_config": lab.config_for_key(),
                        "crops": cfg.crops.model_dump(mode="json"),
                        "tokenizers": {name: ref.model_dump(mode="json") for name, ref in refs.items()}})

    def compute() -> UnitOutput:
        lab.setup()
        toks = {name: load_committed(store, ref) for name, ref in refs.items()}
        table = store.read_table(config.name, IMAGES, shard, columns=["sample_key", "image", "caption"])
        keys, crops, errors = [], [], []
        inputs: dict[str, list[torch.Tensor]] = {m.name: [] for m in mods}
        rows = table.to_pylist()
        step = max(1, lab.batch_size // cfg.crops.n_crops)
        for start in range(0, len(rows), step):
            batch_keys, batch_crops, rgbs, captions = [], [], [], []
            for row in rows[start:start + step]:
                try:
                    rgb = decode_image(row["image"])
                except Exception as exc:  # an undecodable image is a sample error, not a shard failure
                    errors.append(SampleError(row["sample_key"], "decode_error", f"{type(exc).__name__}: {exc}"))
                    continue
                for c in range(cfg.crops.n_crops):
                    rgbs.append(apply_crop(rgb, crop_for(cfg.crops, row["sample_key"], c), "rgb"))
                    batch_keys.append(row["sample_key"])
                    batch_crops.append(c)
                    captions.append(row.get("caption"))
            if not rgbs:
                continue
            results = lab.label_batch(Batch(batch_keys, rgbs, captions))
            failed: dict[str, Exception] = {}  # a sample fails as a whole when any of its crops fails
            for key, res in zip(batch_keys, results):
                if isinstance(res, Exception):
                    failed.setdefault(key, res)
            errors += [SampleError(key, getattr(exc, "reason", "label_error"), str(exc)) for key, exc in failed.items()]
            for key, c, res in zip(batch_keys, batch_crops, results):
                if key in failed:
                    continue
                for m in mods:
                    tcfg = toks[m.name].config
                    arr = decode_label(m.label, res[m.label])
                    inputs[m.name].append(normalize(tcfg.target, arr, getattr(tcfg, "image_size", None),
                                                    getattr(tcfg, "in_channels", None)))
                keys.append(key)
                crops.append(c)
        tables = {}
        for m in mods:
            model = toks[m.name]
            n_tokens = model.config.n_tokens
            tokens = np.zeros((0, n_tokens), np.int16)
            if inputs[m.name]:
                model.to(cfg.device)
                x = torch.stack(inputs[m.name])
                with torch.no_grad():
                    tokens = torch.cat([model.encode(x[i:i + cfg.batch_size].to(cfg.device)).cpu()
                                        for i in range(0, x.shape[0], cfg.batch_size)]).numpy().astype(np.int16)
            tables[m.token_artifact] = pa.table({"sample_key": keys, "crop": pa.array(crops, pa.int16()),
                                                 "tokens": pa.array(list(tokens), pa.list_(pa.int16()))})
        return UnitOutput(tables, errors=errors, stats={"labeler": lab_ref.id, "fused": True,
                                                        "samples": len(set(keys)), "rows": len(keys)})

    return run_unit(store, unit, compute, force=force)
