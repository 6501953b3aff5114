"""Where the evaluation finds a pretrain checkpoint, and how it loads one (weights checked against the manifest)."""

from __future__ import annotations

import hashlib

from fourm_core.manifest import Manifest
from fourm_core.store import ArtifactStore

from .config import EvalConfig


def checkpoint_artifact(run: str, step: int) -> str:
    """Same layout as train_stage.trainer.checkpoint_artifact."""
    return f"checkpoints/{run}/step-{step:08d}"


def checkpoint_steps(store: ArtifactStore, namespace: str, run: str) -> list[int]:
    prefix = f"checkpoints/{run}/step-"
    return sorted(int(a[len(prefix):]) for a in store.artifacts(namespace) if a.startswith(prefix))


def find_checkpoint(store: ArtifactStore, cfg: EvalConfig) -> Manifest | None:
    """The checkpoint manifest the config names (latest step when none is given), or None."""
    ck = cfg.checkpoint
    step = ck.step
    if step is None:
        steps = checkpoint_steps(store, ck.namespace, ck.run)
        if not steps:
            return None
        step = steps[-1]
    return store.read_manifest(ck.namespace, checkpoint_artifact(ck.run, step), None)


def load_checkpoint(store: ArtifactStore, manifest: Manifest, device: str = "cpu"):
    """The FourM model of a committed checkpoint (weights verified against the manifest digest)."""
    from train_stage.model.hub import model_from_bytes

    ns, art = manifest.dataset, manifest.artifact
    config = store.read_bytes(store.data_path(ns, art, None, ".config.json"))
    weights = store.read_bytes(store.data_path(ns, art, None, ".safetensors"))
    if hashlib.sha256(weights).hexdigest() != manifest.digest:
        raise IOError(f"{manifest.uri} does not match the digest of its manifest")
    model = model_from_bytes(config, weights, source=manifest.uri)
    return model.to(device).eval()

