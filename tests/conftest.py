"""Fixtures shared by every test folder. Folder-specific fixtures live in that folder's conftest.py."""

from __future__ import annotations

import os

import pytest

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
