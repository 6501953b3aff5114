"""Fixtures shared by every test folder. Folder-specific fixtures live in that folder's conftest.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = str(Path(__file__).resolve().parents[1])

# Tests never reach the network and use tiny models: keep hub libraries offline and torch on few threads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def store_root(tmp_path):
    """A fresh local store root."""
    return str(tmp_path / "store")


@pytest.fixture
def store(store_root):
    from fourm_core import ArtifactStore

    return ArtifactStore(store_root)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server (SeaweedFS) on 127.0.0.1 for the whole session, with one bucket; killed at the end."""
    from tests.servers import kill, start_seaweedfs

    server = start_seaweedfs(tmp_path_factory.mktemp("s3"))
    yield server
    kill(server.proc)


@pytest.fixture
def s3_root(s3_server, request):
    """``(root, storage_options)``: a fresh ``s3://bucket/<test name>`` prefix on the session's S3 server."""
    import uuid

    prefix = f"{request.node.name[:40]}-{uuid.uuid4().hex[:6]}".replace("[", "-").replace("]", "")
    return f"s3://{s3_server.bucket}/{prefix}", s3_server.storage_options


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray runtime for the whole test session (start ~5 s; two ray.init calls in one process
    fail). Workers get the checkout on PYTHONPATH so they import the project and the tests package."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_eval_store(tmp_path_factory):
    """A small real store for the evaluation stage (tests/eval/tiny_store.py): synthetic scenes with ground
    truth, pseudo labels, 14x14-grid tiny tokenizers, token shards and a 1-step tiny 4M checkpoint.
    Shared by tests/eval and tests/pipelines (~20 s to build on 2 cores)."""
    from tests.eval.tiny_store import build, torch_threads

    root = tmp_path_factory.mktemp("eval-store")
    with torch_threads(1):
        store, checkpoint = build(str(root / "store"), dataset="ev", n_samples=8, shard_size=4, size=64,
                                  tokenizer_steps=0, train_steps=1, batch_size=4, dim=32, run="tiny",
                                  workdir=root)
    return store, checkpoint


# The eval config the tests use on that store: small and quick (diffusion decoders with one DDIM step).
# (tokenizer_dataset: None = the dataset's own; the demo preset reads demo's tokenizers for its held-out scenes)
TINY_EVAL_OVERRIDES = {"dataset": "ev", "tokenizer_dataset": None, "checkpoint.run": "tiny",
                       "targets": ["tok_depth@224", "tok_semseg@224"],
                       "max_samples": 4, "batch_size": 4, "decode_steps": 1, "generation.steps": 2,
                       "loss_repeats": 1, "grid_samples": 2}
