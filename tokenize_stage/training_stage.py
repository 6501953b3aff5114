"""``train-tokenizers``: train a dataset's tokenizers on its committed pseudo labels, as a pipeline stage.

One unit per tokenizer (``<dataset>/tokenizers/<name>[-<profile>]``, see ``train_tokenizer``), whose cache
key holds the training config and the digests of every label shard it read: a re-run with the same labels
is a no-op, new labels retrain. It runs before ``tokenize``, which encodes with the committed weights.
The tokenizers belong to the dataset as a whole, so the stage has a single unit group, reported as shard 0;
its tokenizers train at once, each in its own process, as many as there are CPUs (``train_pool``).

A growing dataset declares its training subset (``tokenize.train.shards``): then only those label shards are
keyed, shards added later change nothing here, and the tokenize units of old shards (keyed on the weights
digest) stay cached. Until every subset shard of a tokenizer's label is committed, that tokenizer waits
(logged, not failed), so a first nightly run on a few shards does not train on a partial subset.
"""

from __future__ import annotations

import logging

from fourm_core.config import DatasetConfig
from fourm_core.modalities import label_artifact
from fourm_core.stage import StageSpec
from fourm_core.store import ArtifactStore
from fourm_core.units import UnitResult

from .registry import tokenizer_specs
from .stage import pretokenize_config
from .train_pool import train_many
from .train_tokenizer import TrainTokenizerConfig, tokenizer_artifact

WHOLE_DATASET = 0
log = logging.getLogger(__name__)


def trained_artifacts(config: DatasetConfig) -> list[str]:
    """The tokenizer artifacts this dataset's config trains (whole-dataset artifacts, no shards)."""
    cfg = pretokenize_config(config)
    return [] if cfg.train is None else [tokenizer_artifact(n, cfg.profile) for n in cfg.train.tokenizers]


def plan_shards(store: ArtifactStore, config: DatasetConfig) -> list[int]:
    return [WHOLE_DATASET] if pretokenize_config(config).train else []


def run_shard(store: ArtifactStore, config: DatasetConfig, shard: int, *, force: bool = False) -> list[UnitResult]:
    cfg = pretokenize_config(config)
    if cfg.train is None:
        return []
    if cfg.profile not in ("tiny", "production"):
        raise ValueError(f"dataset {config.name}: tokenize.profile must be tiny or production to train, "
                         f"got {cfg.profile!r}")
    configs = []
    for name in cfg.train.tokenizers:
        subset = cfg.train.shards
        if subset is not None:
            label = tokenizer_specs()[name].labels[0]
            missing = sorted(set(subset) - set(store.committed_shards(config.name, label_artifact(label))))
            if missing:
                log.warning("tokenizer %s waits: %s/%s shards %s of its training subset are not committed yet",
                            name, config.name, label_artifact(label), missing)
                continue
        configs.append(TrainTokenizerConfig(tokenizer=name, profile=cfg.profile,
                                            steps=cfg.train.steps_for.get(name, cfg.train.steps),
                                            batch_size=cfg.train.batch_size, eval_samples=cfg.train.eval_samples,
                                            sampling_steps=cfg.train.sampling_steps, model_grid=cfg.train.model_grid))
    # concurrently, one process per tokenizer up to the CPUs (train_pool); a failed one fails only itself
    return train_many(store, config.name, configs, force=force, shards=cfg.train.shards)


STAGE = StageSpec(name="train-tokenizers", plan_shards=plan_shards, run_shard=run_shard, heavy=False,
                  artifacts=(), artifacts_for=lambda config: trained_artifacts(config),
                  # one unit over the declared subset (all shards when none is declared); every tokenize shard reads it
                  after=("ingest", "pseudolabel"), whole_dataset=True, reads_shards=lambda config, shard: (
                      pretokenize_config(config).train.shards if pretokenize_config(config).train else None))
