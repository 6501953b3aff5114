"""``import-tokenizers``: use apple/ml-4m's released tokenizers instead of training our own.

``tokenize.official`` names, per tokenizer, where its released files are (a hub id such as
``EPFL-VILAB/4M_tokenizers_semseg_4k_224-448``, a local folder or an ``s3://`` prefix). One unit per
tokenizer loads it through ``models.from_pretrained`` (strictly, ``models.ml4m``) and commits it as the
same artifact training would (``<dataset>/tokenizers/<name>[-<profile>]``: ``data.safetensors`` +
``data.config.json`` in our ml4m layout, a model card naming the source), so the ``tokenize`` stage and
its sequence units encode with it unchanged and the token shards are what a released 4M-21 model reads.
The cache key holds the source and the sha256 of its files: new upstream weights re-import, and every
token unit downstream re-tokenizes because its tokenizer digest changed. Like ``train-tokenizers``, the
stage has a single unit group, reported as shard 0.
"""

from __future__ import annotations

import json

import pyarrow as pa

from fourm_core.config import DatasetConfig
from fourm_core.manifest import ModelRef
from fourm_core.modalities import ModalityKind, get_modality
from fourm_core.stage import StageSpec
from fourm_core.store import ArtifactStore
from fourm_core.units import Unit, UnitOutput, UnitResult, run_unit

from .models.base import Tokenizer
from .models.hub import from_pretrained, source_digest
from .models.ml4m import NAME_MAP
from .stage import pretokenize_config
from .train_tokenizer import tokenizer_artifact

CODE_VERSION = "tokenize.import/1"
WHOLE_DATASET = 0


def import_tokenizer(store: ArtifactStore, dataset: str, name: str, source: str, profile: str = "production", *,
                     force: bool = False) -> UnitResult:
    """Load the released tokenizer ``name`` from ``source`` and commit it as ``tokenizers/<name>[-<profile>]``."""
    directory, digest = source_digest(source, **store.storage_options)
    artifact = tokenizer_artifact(name, profile)
    unit = Unit(stage="tokenize.import", dataset=dataset, artifacts=[artifact], shard=None, code_version=CODE_VERSION,
                config={"tokenizer": name, "source": source}, model=ModelRef(id=source, source=source, digest=digest))

    def compute() -> UnitOutput:
        model = from_pretrained(directory, tokenizer=name)
        if model.config.name != name:
            raise ValueError(f"{source} holds a {model.config.name}, not {name}; fix tokenize.official.{name}")
        check_global_token_count(model, source)
        config = model.config_dict()
        n_params = sum(p.numel() for p in model.parameters())
        card = (f"# {name} (released by apple/ml-4m)\n\nSource: `{source}` (sha256 of its files `{digest}`).\n"
                f"Loaded strictly into our `{config['architecture']}` modules in the ml4m layout through the name "
                f"map of `tokenize_stage.models.ml4m` ({len(NAME_MAP)} rules); {n_params:,} parameters.\n\n"
                f"```json\n{json.dumps(config, indent=2)}\n```\n")
        table = pa.table({"source": [source], "source_digest": [digest], "parameters": [n_params]})
        files = {".safetensors": model.weights_bytes(), ".config.json": json.dumps(config, indent=2).encode(),
                 ".card.md": card.encode()}
        return UnitOutput({artifact: table}, stats={"source": source, "parameters": n_params},
                          extra_files={artifact: files})

    return run_unit(store, unit, compute, force=force)


def check_global_token_count(model: Tokenizer, source: str) -> None:
    """A global-embedding tokenizer must give as many tokens as the released 4M-21 reads (``max_tokens`` of the
    modality = 16 rows of its position table). The reference yamls build these MLP tokenizers with
    ``num_codebooks: 8`` (8 tokens); the releases named ``..._8k_16_224`` give 16, which the 4M-21 model needs."""
    modality = get_modality(model.config.modality)
    if modality.kind == ModalityKind.GLOBAL_TOKENS and model.n_tokens != modality.max_tokens:
        raise ValueError(
            f"{source}: {model.config.name} gives {model.n_tokens} tokens per embedding (num_codebooks "
            f"{model.n_tokens} in its config.json), but {modality.name} holds {modality.max_tokens} (the released "
            f"4M-21 reads {modality.max_tokens}); point tokenize.official.{model.config.name} at the release with "
            f"{modality.max_tokens} tokens (EPFL-VILAB/4M_tokenizers_*-global_8k_16_224)")


def imported_artifacts(config: DatasetConfig) -> list[str]:
    cfg = pretokenize_config(config)
    return [tokenizer_artifact(n, cfg.profile) for n in cfg.official]


def plan_shards(store: ArtifactStore, config: DatasetConfig) -> list[int]:
    return [WHOLE_DATASET] if pretokenize_config(config).official else []


def run_shard(store: ArtifactStore, config: DatasetConfig, shard: int, *, force: bool = False) -> list[UnitResult]:
    cfg = pretokenize_config(config)
    return [import_tokenizer(store, config.name, name, source, cfg.profile, force=force)
            for name, source in cfg.official.items()]


STAGE = StageSpec(name="import-tokenizers", plan_shards=plan_shards, run_shard=run_shard, heavy=False,
                  artifacts=(), artifacts_for=imported_artifacts, after=(), whole_dataset=True)
