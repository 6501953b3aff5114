"""Fixtures for the ingestion tests: a loopback HTTP server and dataset configs written to YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fourm_core.config import DatasetConfig, load_dataset_config

from .server import LoopbackServer, default_routes


@pytest.fixture(scope="session")
def http_server():
    with LoopbackServer(default_routes()) as server:
        yield server


@pytest.fixture
def make_config(tmp_path: Path):
    """Write a dataset config YAML (validated through the real loader) and return it."""

    def make(sources: list[dict[str, Any]], name: str = "t", **ingest: Any) -> DatasetConfig:
        data: dict[str, Any] = {"name": name, "sources": sources, "ingest": ingest}
        if all(s["kind"] == "c4_jsonl" for s in sources):
            data["text_only"] = True
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return load_dataset_config(path)

    return make


# The test servers listen on loopback, which the downloader refuses unless told otherwise (untrusted URL lists
# must not reach internal addresses): every test that fetches from them allows it explicitly.
LOOPBACK = {"allow_networks": ["127.0.0.0/8"]}
# Download settings that keep fault tests fast: short timeout, tiny backoff, 2 MB cap.
FAST_DOWNLOAD = {"timeout_s": 0.6, "retries": 2, "backoff_s": 0.02, "max_bytes": 2_000_000, "concurrency": 16,
                 "max_redirects": 3, **LOOPBACK}
