"""Shard planning: which samples go to which shard, deterministically and stably across runs.

The dataset's samples are its sources' samples concatenated in config order; shard ``s`` holds global
indices ``[s * shard_size, (s + 1) * shard_size)``. So the same sources and shard size always give the
same shards, a shard is computable alone (no other shard's output is needed), and appending rows to the
last URL list only changes the last shard(s).

URL de-duplication is dataset-wide: the first occurrence of a URL (in global order) is fetched, every
later one is recorded as ``duplicate_url`` in its own shard. Content de-duplication here is per shard (a
dataset-wide one would make shards depend on each other); across shards and datasets it is the separate
``dedup`` stage (ingest_stage/dedup.py); see docs/ingest.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fourm_core.config import ConfigError, DatasetConfig

from .samples import SampleRef
from .sources import Source, make_source


@dataclass(frozen=True)
class Slice:
    """The part of one source that falls into a shard."""

    source: Source
    start: int  # index within the source
    stop: int
    global_start: int  # global index of ``start``


@dataclass
class Plan:
    config: DatasetConfig
    sources: list[Source]
    counts: list[int]
    first_of: np.ndarray | None  # global index -> global index of the first sample with the same URL (-1: no URL)
    _refs: dict[tuple[int, int, int], list[SampleRef]] = field(default_factory=dict, repr=False)

    @property
    def shard_size(self) -> int:
        return self.config.ingest.shard_size

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def n_shards(self) -> int:
        return math.ceil(self.total / self.shard_size)

    def slices(self, shard: int) -> list[Slice]:
        if not 0 <= shard < self.n_shards:
            raise ValueError(f"dataset '{self.config.name}' has shards 0..{self.n_shards - 1} "
                             f"({self.total} samples, shard_size {self.shard_size}); shard {shard} does not exist")
        lo, hi = shard * self.shard_size, min((shard + 1) * self.shard_size, self.total)
        out, offset = [], 0
        for src, n in zip(self.sources, self.counts):
            a, b = max(lo, offset), min(hi, offset + n)
            if a < b:
                out.append(Slice(src, a - offset, b - offset, a))
            offset += n
        return out

    def refs(self, sl: Slice) -> list[SampleRef]:
        """The refs of a slice (memoised: the cache key and the work both need them; listing can be slow)."""
        key = (sl.source.position, sl.start, sl.stop)
        if key not in self._refs:
            self._refs[key] = sl.source.refs(sl.start, sl.stop)
        return self._refs[key]

    def items(self, shard: int) -> list[tuple[int, Slice, SampleRef]]:
        """(global index, slice, ref) for every sample of the shard, in global order."""
        out = []
        for sl in self.slices(shard):
            refs = self.refs(sl)
            if len(refs) != sl.stop - sl.start:
                raise RuntimeError(f"source {sl.source.position} ({sl.source.uri}) listed {sl.stop - sl.start} samples "
                                   f"for this range but yielded {len(refs)}: did it change during the run?")
            out.extend((sl.global_start + i, sl, r) for i, r in enumerate(refs))
        return out


def check_kinds(config: DatasetConfig, sources: list[Source]) -> None:
    """Text sources only in text-only datasets and image sources only in image datasets."""
    for s in sources:
        if s.text and not config.text_only:
            raise ConfigError(f"dataset '{config.name}': source {s.position} ({s.cfg.kind}) is text-only; set "
                              f"'text_only: true' or move it to its own dataset config")
        if not s.text and config.text_only:
            raise ConfigError(f"dataset '{config.name}' is text_only but source {s.position} ({s.cfg.kind}) holds "
                              f"images; remove it or set 'text_only: false'")


def check_key_prefixes(config: DatasetConfig, sources: list[Source]) -> None:
    """Two local-file sources whose keys would share a prefix (two folders both named ``images``) could give
    two different samples one key: refuse the config before any work, naming the fix."""
    seen: dict[str, Source] = {}
    for s in sources:
        prefix = s.key_prefix
        if prefix is None:
            continue
        if prefix in seen:
            raise ConfigError(f"dataset '{config.name}': sources {seen[prefix].position} ({seen[prefix].uri}) and "
                              f"{s.position} ({s.uri}) would both key their samples '{prefix}/...'; give one of them "
                              f"a distinct 'name:'")
        seen[prefix] = s


def check_score_filters(config: DatasetConfig, sources: list[Source]) -> None:
    """Score filters need every image source to keep the filtered columns; otherwise every sample would be
    refused as ``score_filter`` (unknown is not 'passes'): refuse the config instead, naming the fix."""
    f = config.ingest.filters
    wanted = set(f.min_scores) | set(f.max_scores)
    if not wanted or config.text_only:
        return
    for s in sources:
        kept = set(getattr(s.cfg, "keep_columns", []) or [])
        if not wanted <= kept:
            raise ConfigError(f"dataset '{config.name}': ingest.filters filter on {sorted(wanted)} but source "
                              f"{s.position} ({s.cfg.kind}) keeps {sorted(kept) or 'no columns'}; add them to its "
                              f"keep_columns (url_parquet) or drop the score filters")


def build_plan(config: DatasetConfig) -> Plan:
    """List every source (cached per process where it is costly) and lay the samples out in shards."""
    sources = [make_source(cfg, i) for i, cfg in enumerate(config.sources)]
    check_kinds(config, sources)
    check_key_prefixes(config, sources)
    check_score_filters(config, sources)
    counts = [s.count() for s in sources]
    first_of = None
    if config.ingest.dedupe and any(s.remote for s in sources):
        parts = []
        for s in sources:
            h = s.url_hashes()
            parts.append(h if h is not None else None)
        first_of = _first_occurrence(parts, counts)
    return Plan(config, sources, counts, first_of)


def _first_occurrence(parts: list[np.ndarray | None], counts: list[int]) -> np.ndarray:
    """For each global index, the global index of the first sample with the same URL hash (-1 if no URL)."""
    total = sum(counts)
    first = np.full(total, -1, dtype=np.int64)
    hashes, where = [], []
    offset = 0
    for h, n in zip(parts, counts):
        if h is not None:
            h, idx = h[:n], np.arange(offset, offset + n)
            has_url = h != 0  # 0: a row without a URL (bad_url), never a duplicate of another
            hashes.append(h[has_url])
            where.append(idx[has_url])
        offset += n
    if hashes:
        allh, idx = np.concatenate(hashes), np.concatenate(where)
        _, first_pos, inverse = np.unique(allh, return_index=True, return_inverse=True)
        first[idx] = idx[first_pos[inverse]]
    return first
