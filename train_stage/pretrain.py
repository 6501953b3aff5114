"""``pretrain``: the unit a Prefect flow calls (``pretrain/demo``, ``pretrain/4m-21-b``).

Cached like every stage: when the run's final checkpoint exists with the same cache key (same
config, input token-shard digests and code version) it is returned without training; otherwise
training resumes from the run's latest checkpoint with that same cache key, if any (a checkpoint made
from other token shards or another config is never resumed), and commits the final one.

``pretrain_demo`` trains the ``demo`` preset on the real demo token shards that the build-dataset flow
commits (``python -m pipelines demo``); it fails with :class:`MissingTokenShardsError`, naming the
missing token artifacts and the command that makes them, when they are not there.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fourm_core.manifest import Manifest
from fourm_core.store import ArtifactStore

from .config import TrainConfig, load_train_config
from .data import MissingTokenShardsError, missing_token_shards_message, needed_artifacts
from .model import preset
from .trainer import (Trainer, checkpoint_artifact, dataset_specs, list_checkpoints, run_inputs, train_ingredients,
                      write_logs)

DEMO_DATASET = "demo"


@dataclass
class PretrainResult:
    """What :func:`run_pretrain` did: the final checkpoint, whether it was reused, and where logs are."""

    manifest: Manifest
    cached: bool
    resumed_from: int  # step of the checkpoint training resumed from (0: from scratch or cached)
    history: list[dict[str, Any]]  # per-step records of the run, resumed steps included (cached: the committed one)
    log_dir: Path | None

    def summary(self) -> dict[str, Any]:
        losses = [r["loss"] for r in self.history]
        return {"checkpoint": self.manifest.uri, "artifact": self.manifest.artifact,
                "namespace": self.manifest.dataset, "cache_key": self.manifest.cache_key,
                "status": "cached" if self.cached else "done", "steps": self.manifest.stats.get("step"),
                "resumed_from": self.resumed_from,
                "loss_start": losses[0] if losses else None, "loss_end": losses[-1] if losses else None,
                "inputs": len(self.manifest.ingredients.inputs),
                "log_dir": str(self.log_dir) if self.log_dir else None,
                "loss_png": str(self.log_dir / "loss.png") if self.log_dir else None}


def check_token_shards(store: ArtifactStore, cfg: TrainConfig) -> None:
    """Raise :class:`MissingTokenShardsError` (before any model is built) when a dataset lacks token shards."""
    for d in dataset_specs(cfg):
        missing = [m for m in d.modalities if not all(store.committed_shards(d.name, a) for a in needed_artifacts(m))]
        if missing:
            raise MissingTokenShardsError(missing_token_shards_message(store, d.name, missing))


def run_pretrain(store: ArtifactStore, train_config: TrainConfig | str, log_dir: str | Path | None = None,
                 force: bool = False, resume: bool = True) -> PretrainResult:
    """Train per ``train_config`` on the token shards in ``store`` (or reuse the cached final checkpoint)."""
    cfg = load_train_config(train_config) if isinstance(train_config, str) else train_config
    check_token_shards(store, cfg)
    log_dir = Path(log_dir) if log_dir else None
    # the cache key from the config and the token-shard manifests alone: a cached run builds no model
    key = train_ingredients(cfg, run_inputs(store, cfg)).cache_key()
    final = store.read_manifest(cfg.namespace, checkpoint_artifact(cfg, cfg.steps), None)
    if final is not None and not force and final.cache_key == key:
        history = json.loads(store.read_bytes(store.data_path(cfg.namespace, final.artifact, None, ".history.json")))
        if log_dir is not None and int(os.environ.get("RANK", "0")) == 0:  # the logs of the run that made it
            mc = preset(cfg.model.size, cfg.model.modalities, **cfg.model.overrides)
            write_logs(history, log_dir, mc.domains_out)
        return PretrainResult(final, True, 0, history, log_dir)
    trainer = Trainer(cfg, store, log_dir=log_dir)
    if trainer.ingredients().cache_key() != key:  # the store changed between the two reads
        raise RuntimeError("token shards changed while the run started; run it again")
    resumed = 0
    if resume and not force:
        def key_of(step: int) -> str | None:
            m = store.read_manifest(cfg.namespace, checkpoint_artifact(cfg, step), None)
            return m.cache_key if m else None

        same = [s for s in list_checkpoints(store, cfg) if s <= cfg.steps and key_of(s) == key]
        if same:  # only committed checkpoints are listed: a write cut short (no manifest) is never resumed
            resumed = trainer.load(same[-1])
            if trainer.d.main:
                print(f"resuming {cfg.run_name} from its checkpoint at step {resumed}", flush=True)
    manifest = trainer.fit()
    if manifest is None:  # non-zero ranks commit nothing; they return what rank 0 wrote
        manifest = store.read_manifest(cfg.namespace, checkpoint_artifact(cfg, cfg.steps), None)
    return PretrainResult(manifest, False, resumed, trainer.history, log_dir)


def pretrain(store: ArtifactStore, train_config: TrainConfig | str, log_dir: str | Path | None = None,
             force: bool = False, resume: bool = True) -> Manifest:
    """Train per ``train_config`` on the token shards in ``store``; return the final checkpoint manifest."""
    return run_pretrain(store, train_config, log_dir, force, resume).manifest


def demo_config(steps: int | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    over = dict(overrides or {})
    if steps:
        over["steps"] = steps
    return load_train_config("demo", over or None)


def pretrain_demo(store: ArtifactStore, log_dir: str | Path | None = None, steps: int | None = None,
                  force: bool = False) -> Manifest:
    """The ``pretrain/demo`` unit: the tiny ``demo`` preset on the demo token shards that
    ``python -m pipelines demo`` (the build-dataset flow) committed in ``store``."""
    return run_pretrain(store, demo_config(steps), log_dir=log_dir, force=force).manifest
