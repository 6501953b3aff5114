"""The source interface: list samples cheaply, slice them by global index, load one payload.

A dataset's samples are its sources' samples concatenated in config order; shard ``s`` holds global
indices ``[s * shard_size, (s + 1) * shard_size)``. Sources must therefore list their samples in a
deterministic order (sorted paths, file order, row order).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from abc import ABC, abstractmethod
from typing import Any

import fsspec
import numpy as np

from ..samples import SampleRef


class Source(ABC):
    """One configured source. Subclasses list samples and load payloads; they never decode images."""

    #: True for URL lists: payloads are fetched by the shard's downloader, not by :meth:`load`.
    remote: bool = False
    #: True for text-only sources (C4): payloads are strings for the ``texts`` artifact.
    text: bool = False
    #: True for synthetic scenes: payloads are :class:`SceneSample` and ground truth is committed too.
    has_ground_truth: bool = False

    def __init__(self, cfg: Any, position: int):
        self.cfg = cfg
        self.position = position  # index of this source in the dataset config

    @property
    def tag(self) -> str:
        """Value of the ``source`` column."""
        return self.cfg.kind

    @property
    def uri(self) -> str:
        return getattr(self.cfg, "path", self.cfg.kind)

    @abstractmethod
    def count(self) -> int:
        """Number of samples (after ``limit``)."""

    @abstractmethod
    def refs(self, start: int, stop: int) -> list[SampleRef]:
        """Samples ``start`` .. ``stop - 1`` of this source, in listing order."""

    def load(self, ref: SampleRef) -> Any:
        """The payload of one sample: encoded image bytes, an RGB array, a SceneSample or a str."""
        raise NotImplementedError(f"{type(self).__name__} is fetched by the downloader")

    def url_hashes(self) -> np.ndarray | None:
        """64-bit hashes of every URL in listing order (URL lists only), for dataset-wide de-duplication."""
        return None

    @property
    def key_prefix(self) -> str | None:
        """The prefix of every sample key of this source when it is not unique by construction (local files):
        two sources of one dataset must not share it (checked at planning)."""
        return None

    def listing_stats(self) -> dict[str, int]:
        """Counts found while listing (e.g. ``skipped_files``), reported in the stats of the source's first shard."""
        return {}

    def slice_digest(self, refs: list[SampleRef]) -> str:
        """A digest of what this slice's output depends on besides config and code (cache key input).

        The default hashes the listed refs (URLs + captions, file names, indices). Sources backed by local
        files add the files' identity (size + mtime or ETag) so an edited file invalidates its shard.
        """
        h = hashlib.sha256()
        for r in refs:
            h.update(json.dumps([r.key, r.url, r.caption, _jsonable(r.locator), r.meta], default=str).encode())
        return h.hexdigest()


def _jsonable(x: Any) -> Any:
    return x if isinstance(x, (str, int, float, type(None), list, tuple)) else repr(x)


def open_fs(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """fsspec filesystem + path for a local path or any URL fsspec knows (s3://, gs://, ...)."""
    return fsspec.core.url_to_fs(path)


def expand_paths(path: str, suffixes: tuple[str, ...]) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    """A file, a folder (its files with ``suffixes``, recursively) or a glob -> sorted file paths.

    Raises FileNotFoundError naming the path when nothing matches (a typo must not yield an empty dataset).
    """
    fs, p = open_fs(path)
    if any(c in p for c in "*?["):
        files = sorted(fs.glob(p))
    elif fs.isdir(p):
        files = sorted(f for f in fs.find(p) if f.endswith(suffixes))
    elif fs.exists(p):
        files = [p]
    else:
        raise FileNotFoundError(f"source path {path!r} does not exist; fix the 'path' of the source in the "
                                f"dataset config (or the environment variable it reads)")
    if not files:
        raise FileNotFoundError(f"source path {path!r} holds no files ending in {', '.join(suffixes)}")
    return fs, files


def source_root(path: str) -> str:
    """The folder a source path names: itself for a folder, the parent of a file, the fixed part of a glob.
    Sample keys are relative to it (plus the source's name), so moving the whole folder keeps them."""
    fs, p = open_fs(path)
    if any(c in p for c in "*?["):
        fixed = p[:min(p.index(c) for c in "*?[" if c in p)]
        return fixed.rstrip("/") if fixed.endswith("/") else posixpath.dirname(fixed)
    return p.rstrip("/") if fs.isdir(p) else posixpath.dirname(p)


def file_identity(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """Cheap identity of a file for cache keys: ETag on object stores, else size + mtime."""
    info = fs.info(path)
    tag = info.get("ETag") or info.get("etag") or f"{info.get('size')}:{info.get('mtime') or info.get('LastModified')}"
    return f"{path}@{tag}"
