"""Manifests: the record of how every committed artifact part was made.

A manifest is written last; its presence is what makes a shard exist. Lineage is the graph of
manifests, followed through ``ingredients.inputs``.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

MANIFEST_SCHEMA = 1


class InputRef(BaseModel):
    """A committed input part this unit read: enough to find it and to know it has not changed."""

    dataset: str
    artifact: str
    shard: int | None = None
    uri: str
    digest: str


class ModelRef(BaseModel):
    """The model a unit used: where it was loaded from and a digest of its weights."""

    id: str = Field(description="human name, e.g. 'Intel/dpt-hybrid-midas' or 'dpt:tiny'")
    source: str = Field(description="local dir, s3:// URI, hub id, or 'tiny'")
    digest: str


class Ingredients(BaseModel):
    """Everything that determines the content of a unit's output. ``git_commit`` is recorded, not keyed."""

    stage: str
    code_version: str
    config: dict[str, Any] = Field(default_factory=dict)
    inputs: list[InputRef] = Field(default_factory=list)
    model: ModelRef | None = None
    git_commit: str = "unknown"

    def cache_key(self) -> str:
        keyed = {
            "stage": self.stage,
            "code_version": self.code_version,
            "config": self.config,
            "inputs": sorted(f"{i.dataset}/{i.artifact}/{i.shard}:{i.digest}" for i in self.inputs),
            "model": self.model.digest if self.model else None,
        }
        blob = json.dumps(keyed, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]


class FileEntry(BaseModel):
    name: str
    digest: str
    bytes: int


class ErrorSummary(BaseModel):
    count: int = 0
    by_reason: dict[str, int] = Field(default_factory=dict)


class Timings(BaseModel):
    started: datetime
    finished: datetime
    seconds: float


class Manifest(BaseModel):
    schema_version: int = MANIFEST_SCHEMA
    dataset: str
    artifact: str
    shard: int | None
    uri: str = Field(description="URI of the main data file")
    digest: str = Field(description="sha256 of the main data file")
    files: list[FileEntry]
    rows: int
    schema_: dict[str, str] = Field(default_factory=dict, alias="schema")
    cache_key: str
    ingredients: Ingredients
    errors: ErrorSummary = ErrorSummary()
    stats: dict[str, Any] = Field(default_factory=dict)
    timings: Timings
    host: str
    flow_run_id: str | None = None

    model_config = {"populate_by_name": True}

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Manifest":
        return cls.model_validate_json(text)

    def as_input(self) -> InputRef:
        return InputRef(dataset=self.dataset, artifact=self.artifact, shard=self.shard, uri=self.uri,
                        digest=self.digest)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def now() -> datetime:
    return datetime.now(timezone.utc)


def hostname() -> str:
    return socket.gethostname()


def flow_run_id() -> str | None:
    """The Prefect flow run this process works for, set by the pipelines layer (core never imports Prefect)."""
    return os.environ.get("FOURM_FLOW_RUN_ID") or os.environ.get("PREFECT__FLOW_RUN_ID") or None


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The git commit of this checkout, with '+dirty' when it has local changes; 'unknown' outside git.
    ``FOURM_GIT_COMMIT`` wins: the container image has no .git and records the commit it was built from."""
    if os.environ.get("FOURM_GIT_COMMIT"):
        return os.environ["FOURM_GIT_COMMIT"]
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
