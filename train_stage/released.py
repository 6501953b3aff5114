"""Released (or any ``save_pretrained``) 4M checkpoints as store checkpoints.

``import_pretrained(store, "EPFL-VILAB/4M-21_B", run="4m21-b-released")`` checks that the files load
strictly (``model.hub.from_pretrained``), then commits them unchanged (same bytes, so the same digest) as
``<namespace>/checkpoints/<run>/step-00000000``: ``data.safetensors`` + ``data.config.json``, with a
manifest whose ingredients name the source and the weights digest. The evaluation stage and the trainer
then read it like one of our checkpoints (``EvalConfig.checkpoint.run = <run>``). Cached: importing the
same weights again returns the committed manifest.
"""

from __future__ import annotations

import hashlib

from fourm_core.manifest import Ingredients, Manifest, ModelRef, Timings, flow_run_id, git_commit, hostname, now
from fourm_core.store import ArtifactStore

from .model.hub import CONFIG_NAME, STORE_CONFIG_NAME, STORE_WEIGHTS_NAME, WEIGHTS_NAME, from_pretrained, local_dir

STAGE = "import-pretrained"
CODE_VERSION = "1"


def import_pretrained(store: ArtifactStore, source: str, run: str, namespace: str = "training",
                      storage_options: dict | None = None, force: bool = False) -> Manifest:
    """Commit the checkpoint at ``source`` (folder, s3:// prefix or hub id) as ``checkpoints/<run>/step-00000000``."""
    directory = local_dir(str(source), storage_options)
    names = (CONFIG_NAME, WEIGHTS_NAME) if (directory / WEIGHTS_NAME).exists() else (STORE_CONFIG_NAME,
                                                                                     STORE_WEIGHTS_NAME)
    weights = (directory / names[1]).read_bytes()
    config = (directory / names[0]).read_bytes()
    digest = hashlib.sha256(weights).hexdigest()
    ingredients = Ingredients(stage=STAGE, code_version=CODE_VERSION, config={"run": run},
                              model=ModelRef(id=str(source), source=str(source), digest=digest),
                              git_commit=git_commit())
    artifact = f"checkpoints/{run}/step-{0:08d}"  # the trainer's layout (trainer.checkpoint_artifact)
    old = store.read_manifest(namespace, artifact, None)
    if old is not None and not force and old.cache_key == ingredients.cache_key():
        return old
    from_pretrained(directory)  # refuse anything that does not load strictly, before committing it
    t = now()
    fields = dict(dataset=namespace, artifact=artifact, shard=None, rows=0, schema={},
                  cache_key=ingredients.cache_key(), ingredients=ingredients,
                  stats={"step": 0, "tokens": 0.0, "source": str(source)},
                  timings=Timings(started=t, finished=t, seconds=0.0), host=hostname(), flow_run_id=flow_run_id())
    return store.commit(fields, {".safetensors": weights, ".config.json": config}, ".safetensors")
