"""``pretrain``: the unit a Prefect flow calls (``pretrain/demo``, ``pretrain/4m-21-b``).

Cached like every stage: when the run's final checkpoint exists with the same cache key (same
config, input token-shard digests and code version) it is returned without training; otherwise
training resumes from the run's latest checkpoint, if any, and commits the final one.
"""

from __future__ import annotations

from pathlib import Path

from fourm_core.manifest import Manifest
from fourm_core.store import ArtifactStore

from .config import TrainConfig, load_train_config
from .trainer import Trainer, checkpoint_artifact


def pretrain(store: ArtifactStore, train_config: TrainConfig | str, log_dir: str | Path | None = None,
             force: bool = False, resume: bool = True) -> Manifest:
    """Train per ``train_config`` on the token shards in ``store``; return the final checkpoint manifest."""
    cfg = load_train_config(train_config) if isinstance(train_config, str) else train_config
    trainer = Trainer(cfg, store, log_dir=log_dir)
    final = store.read_manifest(cfg.namespace, checkpoint_artifact(cfg, cfg.steps), None)
    if final is not None and not force and final.cache_key == trainer.ingredients().cache_key():
        return final
    if resume and not force:
        trainer.load()
    manifest = trainer.fit()
    if manifest is None:  # non-zero ranks commit nothing; they return what rank 0 wrote
        manifest = store.read_manifest(cfg.namespace, checkpoint_artifact(cfg, cfg.steps), None)
    return manifest


def pretrain_demo(store: ArtifactStore, log_dir: str | Path | None = None, steps: int | None = None) -> Manifest:
    """The ``pretrain/demo`` unit: synthetic demo token shards (until the tokenize stage makes real
    ones) and the tiny preset."""
    from .synthetic import make_token_shards

    cfg = load_train_config("demo", {"steps": steps} if steps else None)
    mods = cfg.model.modalities
    make_token_shards(store, "demo", list(mods))
    return pretrain(store, cfg, log_dir=log_dir)
