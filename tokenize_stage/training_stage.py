"""``train-tokenizers``: train a dataset's tokenizers on its committed pseudo labels, as a pipeline stage.

One unit per tokenizer (``<dataset>/tokenizers/<name>[-<profile>]``, see ``train_tokenizer``), whose cache
key holds the training config and the digests of every label shard it read: a re-run with the same labels
is a no-op, new labels retrain. It runs before ``tokenize``, which encodes with the committed weights.
The tokenizers belong to the dataset as a whole, so the stage has a single unit group, reported as shard 0.
"""

from __future__ import annotations

from fourm_core.config import DatasetConfig
from fourm_core.stage import StageSpec
from fourm_core.store import ArtifactStore
from fourm_core.units import UnitResult

from .stage import pretokenize_config
from .train_tokenizer import TrainTokenizerConfig, tokenizer_artifact, train_tokenizer

WHOLE_DATASET = 0


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
    results = []
    for name in cfg.train.tokenizers:
        tcfg = TrainTokenizerConfig(tokenizer=name, profile=cfg.profile, steps=cfg.train.steps,
                                    batch_size=cfg.train.batch_size, eval_samples=cfg.train.eval_samples,
                                    sampling_steps=cfg.train.sampling_steps, model_grid=cfg.train.model_grid)
        results.append(train_tokenizer(store, config.name, tcfg, force=force))
    return results


STAGE = StageSpec(name="train-tokenizers", plan_shards=plan_shards, run_shard=run_shard, heavy=False,
                  artifacts=(), artifacts_for=lambda config: trained_artifacts(config))
