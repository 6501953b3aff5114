"""Pre-tokenization: per (modality, shard) token shards, as the ``tokenize`` StageSpec.

For every image-token / global-token modality of the registry whose tokenizer is committed (see
``train_tokenizer``), a unit reads the modality's committed label shard, applies the sample's shared
crops (``crops``), normalises, encodes, and commits ``tokens/<modality>`` with columns
``sample_key, crop int16, tokens list<int16>`` (docs/data-format.md). A crops unit commits
``tokens/_crops`` (``sample_key, crop, box, flip``) once per shard. Sequence modalities (det, metadata,
color_palette, human_poses, sam_instance) run after the image units (``sequences.py``); outside the
pseudolabel feature subset, feature labelers and their tokenizers run fused (``fused.py``). A caption unit
(``captions.py``) commits ``tokens/caption``: the WordPiece ids of the shard's captions (``images``/``texts``).

Cache keys: a token unit's key holds the crop settings, its label shard's digest and its tokenizer's
weights digest (ModelRef) — so a retrained tokenizer re-tokenizes only its own modality, and a killed
run resumes with exactly the units that have no manifest.

Dataset config section (``DatasetConfig.tokenize``), validated by :class:`PretokenizeConfig`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch
from pydantic import Field, field_validator, model_validator

from fourm_core.config import DatasetConfig, StrictModel, validate_config
from fourm_core.manifest import InputRef
from fourm_core.modalities import MODALITIES, Modality
from fourm_core.stage import StageSpec, units_of_run_shard
from fourm_core.store import ArtifactStore
from fourm_core.units import SampleError, Unit, UnitOutput, UnitResult, run_unit

from . import fused, sequences
from .captions import CAPTION, CAPTION_ARTIFACT, caption_shards, caption_source, caption_unit
from .committed import load_committed, tokenizer_ref
from .crops import CropConfig, apply_crop, crop_for
from .labels import iter_label_rows
from .normalize import normalize
from .registry import TOKEN_KINDS, sub_tokenizer
from .sequences import SequenceConfig
from .train_tokenizer import tokenizer_artifact

CODE_VERSION = "tokenize.pretokenize/1"
CROPS_CODE_VERSION = "tokenize.crops/1"
CROPS_ARTIFACT = "tokens/_crops"


class TrainTokenizersConfig(StrictModel):
    """Which tokenizers the ``train-tokenizers`` stage trains on this dataset's labels, and how long."""

    tokenizers: list[str] = Field(min_length=1, description="registry tokenizer names, e.g. semseg_vqvae")
    steps: int = Field(300, gt=0)
    steps_for: dict[str, int] = Field(default_factory=dict, description="tokenizer -> its own step count instead "
                                      "of `steps`, e.g. {rgb_diffusion: 600}")
    batch_size: int = Field(16, gt=0)
    eval_samples: int = Field(32, gt=0, description="held-out samples for the tokenizer-bound report")
    sampling_steps: int | None = Field(None, gt=0, description="DDIM steps in diffusion reports")
    model_grid: bool = Field(False, description="tiny profile: the modality's full token grid (what the model "
                                                "trains on) instead of the cheap 4x4 one")
    shards: list[int] | None = Field(None, description="the declared training subset (label shards). A growing "
                                                       "dataset sets it: the tokenizers' cache keys then hold only "
                                                       "these shards, so new shards neither retrain them nor "
                                                       "re-tokenize old shards. None: every committed label shard")

    @field_validator("tokenizers")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        from .registry import tokenizer_names

        unknown = sorted(set(names) - set(tokenizer_names()))
        if unknown:
            raise ValueError(f"unknown tokenizer(s) {unknown}; known: {', '.join(tokenizer_names())}")
        return names

    @model_validator(mode="after")
    def _steps_for_trained(self) -> "TrainTokenizersConfig":
        stray = sorted(set(self.steps_for) - set(self.tokenizers))
        if stray:
            raise ValueError(f"tokenize.train.steps_for names {stray}, which tokenize.train.tokenizers does not "
                             f"train; add them there or drop them from steps_for")
        if any(v <= 0 for v in self.steps_for.values()):
            raise ValueError(f"tokenize.train.steps_for {self.steps_for}: step counts must be positive")
        return self


class PretokenizeConfig(StrictModel):
    train: TrainTokenizersConfig | None = Field(None, description="train tokenizers on this dataset first")
    official: dict[str, str] = Field(default_factory=dict, description="tokenizer -> where its released apple/ml-4m "
                                     "files are (hub id, folder, s3://); the import-tokenizers stage commits them "
                                     "in place of training (official.py)")
    modalities: list[str] | None = Field(None, description="default: every token modality with a committed tokenizer, "
                                                           "and caption")
    captions: bool = Field(True, description="commit tokens/caption from the ingested captions (when `modalities` "
                                             "is set: only if it lists caption)")
    text_tokenizer: str | None = Field(None, description="text tokenizer for captions: tokenizer.json path, folder, "
                                                         "URL or hub id (default: the vendored reference 30k file)")
    profile: str = Field("production", description="which committed tokenizer weights to use")
    tokenizer_dataset: str | None = Field(None, description="dataset the tokenizers were trained under "
                                                            "(default: this dataset)")
    label_columns: dict[str, str] = Field(default_factory=dict, description="label -> column (default: label)")
    crops: CropConfig = CropConfig()
    batch_size: int = Field(32, gt=0)
    device: str = Field("cpu", description="torch device for encoding (not part of the cache key)")
    fused: bool = Field(True, description="outside pseudolabel.feature_subset, label features and tokenize them in "
                                          "one pass, storing only tokens (fused.py)")
    sequences: SequenceConfig = SequenceConfig()  # sequence modalities (sequences.py)

    @field_validator("official")
    @classmethod
    def _known_official(cls, named: dict[str, str]) -> dict[str, str]:
        from .registry import tokenizer_names

        unknown = sorted(set(named) - set(tokenizer_names()))
        if unknown:
            raise ValueError(f"unknown tokenizer(s) {unknown}; known: {', '.join(tokenizer_names())}")
        return named

    @field_validator("modalities")
    @classmethod
    def _tokenizable(cls, names: list[str] | None) -> list[str] | None:
        for name in names or []:
            if name not in MODALITIES:
                raise ValueError(f"unknown modality {name!r}; known: {', '.join(MODALITIES)}")
            if (name != CAPTION.name and name not in sequences.SEQUENCE_MODALITIES
                    and MODALITIES[name].kind not in TOKEN_KINDS):
                raise ValueError(f"modality {name!r} is not pre-tokenized by this stage (image/global token "
                                 f"modalities, sequence modalities and caption are)")
        return names


def pretokenize_config(config: DatasetConfig) -> PretokenizeConfig:
    return validate_config(PretokenizeConfig, config.tokenize, f"dataset {config.name}: tokenize")


def _captions_enabled(cfg: PretokenizeConfig) -> bool:
    return cfg.captions and (cfg.modalities is None or CAPTION.name in cfg.modalities)


def _token_modalities(store: ArtifactStore, config: DatasetConfig, cfg: PretokenizeConfig) -> list[Modality]:
    """Image/global token modalities to encode (caption and sequence modalities have their own units)."""
    if cfg.modalities is not None:
        return [MODALITIES[m] for m in cfg.modalities if MODALITIES[m].kind in TOKEN_KINDS]
    ns = cfg.tokenizer_dataset or config.name
    return [m for m in MODALITIES.values() if m.kind in TOKEN_KINDS and m.tokenizer and
            store.read_manifest(ns, tokenizer_artifact(sub_tokenizer(m.tokenizer), cfg.profile), None) is not None]


def plan_shards(store: ArtifactStore, config: DatasetConfig) -> list[int]:
    """Shards that have a committed label shard for at least one token modality (or captions to encode)."""
    cfg = pretokenize_config(config)
    shards: set[int] = set(caption_shards(store, config.name)) if _captions_enabled(cfg) else set()
    for m in _token_modalities(store, config, cfg):
        shards.update(store.committed_shards(config.name, m.label_artifact))
    shards.update(sequences.plan_shards(store, config.name, cfg))  # sequence modalities (sequences.py)
    return sorted(shards)


def _crops_unit(store: ArtifactStore, config: DatasetConfig, cfg: PretokenizeConfig, shard: int,
                label_refs: list[InputRef], force: bool) -> UnitResult:
    unit = Unit(stage="tokenize.crops", dataset=config.name, artifacts=[CROPS_ARTIFACT], shard=shard,
                code_version=CROPS_CODE_VERSION, config=cfg.crops, inputs=list(label_refs))

    def compute() -> UnitOutput:
        keys: set[str] = set()
        for ref in label_refs:
            keys.update(store.read_table(config.name, ref.artifact, shard, columns=["sample_key"])
                        .column("sample_key").to_pylist())
        rows = [(k, c, crop_for(cfg.crops, k, c)) for k in sorted(keys) for c in range(cfg.crops.n_crops)]
        table = pa.table({"sample_key": [k for k, _, _ in rows],
                          "crop": pa.array([c for _, c, _ in rows], pa.int16()),
                          "box": pa.array([list(cr.box) for _, _, cr in rows], pa.list_(pa.float32())),
                          "flip": pa.array([cr.flip for _, _, cr in rows], pa.bool_())})
        return UnitOutput({CROPS_ARTIFACT: table})

    return run_unit(store, unit, compute, force=force)


def _token_unit(store: ArtifactStore, config: DatasetConfig, cfg: PretokenizeConfig, shard: int, modality: Modality,
                force: bool) -> UnitResult:
    ns = cfg.tokenizer_dataset or config.name
    name = sub_tokenizer(modality.tokenizer)
    ref = tokenizer_ref(store, ns, name, cfg.profile)
    label_ref = store.input_ref(config.name, modality.label_artifact, shard)
    column = cfg.label_columns.get(modality.label)  # None: the labelers' storage format (label_codec)
    unit = Unit(stage="tokenize", dataset=config.name, artifacts=[modality.token_artifact], shard=shard,
                code_version=CODE_VERSION, model=ref, inputs=[label_ref],
                config={"modality": modality.name, "column": column, "crops": cfg.crops.model_dump(mode="json")})

    def compute() -> UnitOutput:
        model = load_committed(store, ref)
        tcfg = model.config
        channels = getattr(tcfg, "in_channels", None)
        size = getattr(tcfg, "image_size", None)
        keys, crops, inputs, errors = [], [], [], []
        for key, raw in iter_label_rows(store, config.name, modality.label, shard, column):
            if raw is None:
                errors.append(SampleError(key, "missing_label", f"{modality.label_artifact} has no value"))
                continue
            try:
                for c in range(cfg.crops.n_crops):
                    cropped = apply_crop(raw, crop_for(cfg.crops, key, c), tcfg.target, channels)
                    inputs.append(normalize(tcfg.target, cropped, size, channels))
                    keys.append(key)
                    crops.append(c)
            except Exception as exc:  # one bad array must not fail the shard
                errors.append(SampleError(key, "bad_label", f"{type(exc).__name__}: {exc}"))
        tokens = np.zeros((0, tcfg.n_tokens), dtype=np.int16)
        if inputs:
            model.to(cfg.device)
            with torch.no_grad():
                x = torch.stack(inputs)
                tokens = torch.cat([model.encode(x[i:i + cfg.batch_size].to(cfg.device)).cpu()
                                    for i in range(0, x.shape[0], cfg.batch_size)]).numpy().astype(np.int16)
        out = pa.table({"sample_key": keys, "crop": pa.array(crops, pa.int16()),
                        "tokens": pa.array(list(tokens), pa.list_(pa.int16()))})
        return UnitOutput({modality.token_artifact: out}, errors=errors,
                          stats={"tokenizer": ref.id, "n_tokens": tcfg.n_tokens, "vocab": tcfg.codebook_size})

    return run_unit(store, unit, compute, force=force)


def run_shard(store: ArtifactStore, config: DatasetConfig, shard: int, *, force: bool = False) -> list[UnitResult]:
    """The crops unit, one token unit per modality with a committed label shard and tokenizer, the fused
    feature units (outside the feature subset), the sequence units and the caption unit."""
    cfg = pretokenize_config(config)
    # Input refs, not manifests: through the index they come from its columns without parsing a manifest
    # (the orchestrator builds every shard's units this way for its cached check).
    found = [(m, store.input_ref(config.name, m.label_artifact, shard)) for m in _token_modalities(store, config, cfg)]
    mods = [m for m, ref in found if ref is not None]
    labels: dict[str, InputRef] = {m.label_artifact: ref for m, ref in found if ref is not None}
    seq_labels = sequences.label_refs(store, config.name, cfg, shard)
    labels.update({m.label_artifact: ref for m, ref in seq_labels.values()})
    fused_mods = fused.fused_modalities(store, config, cfg, shard)
    if fused_mods:  # fused modalities have no label shard: their samples are the images shard's
        labels["images"] = store.input_ref(config.name, "images", shard)  # type: ignore[assignment]
    results = []
    if labels:
        results.append(_crops_unit(store, config, cfg, shard, list(labels.values()), force))
    results += [_token_unit(store, config, cfg, shard, m, force) for m in mods]
    results += [fused.fused_unit(store, config, cfg, shard, name, ms, force) for name, ms in fused_mods.items()]
    results += sequences.run_units(store, config.name, cfg, shard, seq_labels, force)
    source = caption_source(store, config.name, shard) if _captions_enabled(cfg) else None
    if source is not None:
        results.append(caption_unit(store, config.name, shard, source, cfg.text_tokenizer, force))
    return results


def artifacts_for(config: DatasetConfig) -> list[str]:
    """Token artifacts this dataset is configured to have (listed modalities, or those of trained tokenizers;
    caption unless switched off)."""
    cfg = pretokenize_config(config)
    caption = [CAPTION_ARTIFACT] if _captions_enabled(cfg) else []
    if cfg.modalities is not None:
        mods = [MODALITIES[m] for m in cfg.modalities if MODALITIES[m].kind in TOKEN_KINDS]
    elif cfg.train is not None:
        trained = set(cfg.train.tokenizers)
        mods = [m for m in MODALITIES.values() if m.kind in TOKEN_KINDS and m.tokenizer
                and sub_tokenizer(m.tokenizer) in trained]
    else:
        mods = [m for m in MODALITIES.values() if m.kind in TOKEN_KINDS]
    seq = sequences.artifacts_for(cfg)
    return [m.token_artifact for m in mods] + seq + ([CROPS_ARTIFACT] if mods or seq else []) + caption


STAGE = StageSpec(name="tokenize", plan_shards=plan_shards, run_shard=run_shard, artifacts_for=artifacts_for,
                  shard_units=units_of_run_shard(run_shard),
                  artifacts=tuple(m.token_artifact for m in MODALITIES.values() if m.kind in TOKEN_KINDS)
                  + tuple(MODALITIES[m].token_artifact for m in sequences.SEQUENCE_MODALITIES)
                  + (CROPS_ARTIFACT, CAPTION_ARTIFACT), num_cpus=1.0,
                  after=("ingest", "pseudolabel", "train-tokenizers", "import-tokenizers"))  # not dedup
