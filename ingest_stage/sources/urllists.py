"""URL lists: CC12M-style TSV (``url<TAB>caption``, optionally .gz) and COYO-style Parquet (url/text columns).

Listing reads the whole list once per process (count + 64-bit URL hashes for dataset-wide
de-duplication, cached); a shard's slice is then read by streaming (TSV) or by row groups (Parquet).
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from typing import Iterator

import numpy as np
import pyarrow.parquet as pq

from fourm_core.config import UrlParquetSource, UrlTsvSource

from ..samples import SampleRef, url_hash64, url_sample_key
from .base import Source, expand_paths, file_identity

_HEADERS = {("url", "caption"), ("url", "text"), ("image_url", "caption")}


def _parse_tsv_line(line: str) -> tuple[str, str | None] | None:
    """(url, caption) of one TSV line; None for blank lines (which are not samples)."""
    line = line.rstrip("\r\n")
    if not line.strip():
        return None
    url, sep, caption = line.partition("\t")
    return url.strip(), (caption.strip() if sep else None)


class UrlTsv(Source):
    remote = True
    cfg: UrlTsvSource

    def _rows(self) -> Iterator[tuple[str, str | None]]:
        fs, files = expand_paths(self.cfg.path, (".tsv", ".tsv.gz", ".txt", ".txt.gz"))
        n = 0
        for f in files:
            with fs.open(f, "rt", encoding="utf-8", errors="replace", compression="infer", newline="") as fh:
                first = True
                for line in fh:
                    row = _parse_tsv_line(line)
                    if row is None:
                        continue
                    if first and (row[0].lower(), (row[1] or "").lower()) in _HEADERS:
                        first = False
                        continue  # a header line, not a sample
                    first = False
                    yield row
                    n += 1
                    if self.cfg.limit is not None and n >= self.cfg.limit:
                        return

    def _listing(self) -> np.ndarray:
        fs, files = expand_paths(self.cfg.path, (".tsv", ".tsv.gz", ".txt", ".txt.gz"))
        return _cached_listing(self, tuple(file_identity(fs, f) for f in files))

    def count(self) -> int:
        return len(self._listing())

    def url_hashes(self) -> np.ndarray:
        return self._listing()

    def refs(self, start: int, stop: int) -> list[SampleRef]:
        return [SampleRef(url_sample_key(url, self.cfg.path, start + i), self.tag, caption, url=url, locator=start + i)
                for i, (url, caption) in enumerate(itertools.islice(self._rows(), start, stop))]


class UrlParquet(Source):
    remote = True
    cfg: UrlParquetSource

    def _files(self) -> tuple[object, list[str]]:
        return expand_paths(self.cfg.path, (".parquet",))

    def _check_columns(self, path: str, names: list[str]) -> None:
        for col in (self.cfg.url_column, self.cfg.text_column, *self.cfg.keep_columns):
            if col not in names:
                raise ValueError(f"{path} has no column {col!r} (columns: {', '.join(names)}); set url_column/"
                                 f"text_column of the url_parquet source to the right names")

    def _listing(self) -> np.ndarray:
        fs, files = self._files()
        return _cached_listing(self, tuple(file_identity(fs, f) for f in files))

    def _iter_url_batches(self) -> Iterator[list[str]]:
        fs, files = self._files()
        left = self.cfg.limit
        for f in files:
            with fs.open(f, "rb") as fh:
                pf = pq.ParquetFile(fh)
                self._check_columns(f, pf.schema_arrow.names)
                for batch in pf.iter_batches(columns=[self.cfg.url_column], batch_size=65536):
                    urls = batch.column(0).to_pylist()
                    if left is not None:
                        urls = urls[:left]
                        left -= len(urls)
                    yield urls
                    if left is not None and left <= 0:
                        return

    def _rows(self, start: int, stop: int) -> Iterator[tuple[str | None, str | None, dict | None]]:
        """Rows start..stop-1, reading only the row groups that overlap them."""
        fs, files = self._files()
        if self.cfg.limit is not None:
            stop = min(stop, self.cfg.limit)
        offset = 0
        for f in files:
            if offset >= stop:
                return
            with fs.open(f, "rb") as fh:
                pf = pq.ParquetFile(fh)
                self._check_columns(f, pf.schema_arrow.names)
                for g in range(pf.num_row_groups):
                    n = pf.metadata.row_group(g).num_rows
                    lo, hi = max(start, offset), min(stop, offset + n)
                    if lo < hi:
                        keep = [c for c in self.cfg.keep_columns if c not in (self.cfg.url_column, self.cfg.text_column)]
                        t = pf.read_row_group(g, columns=[self.cfg.url_column, self.cfg.text_column, *keep])
                        t = t.slice(lo - offset, hi - lo)
                        urls = t.column(self.cfg.url_column).to_pylist()
                        texts = t.column(self.cfg.text_column).to_pylist()
                        metas = (t.select(self.cfg.keep_columns).to_pylist() if self.cfg.keep_columns
                                 else [None] * len(urls))
                        yield from zip(urls, texts, metas)
                    offset += n
                    if offset >= stop:
                        return

    def count(self) -> int:
        return len(self._listing())

    def url_hashes(self) -> np.ndarray:
        return self._listing()

    def refs(self, start: int, stop: int) -> list[SampleRef]:
        return [SampleRef(url_sample_key(url, self.cfg.path, start + i), self.tag, caption,
                          url=(url or "").strip(), locator=start + i, meta=meta)
                for i, (url, caption, meta) in enumerate(self._rows(start, stop))]


@lru_cache(maxsize=8)
def _listing_for(kind: str, cfg_json: str, identity: tuple[str, ...], wrapped: "_Unhashed") -> np.ndarray:
    source = wrapped.source
    if isinstance(source, UrlTsv):
        hashes = [url_hash64([u for u, _ in chunk]) for chunk in _chunks(source._rows(), 65536)]
    else:
        assert isinstance(source, UrlParquet)
        hashes = [url_hash64(urls) for urls in source._iter_url_batches()]
    return np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)


def _cached_listing(source: Source, identity: tuple[str, ...]) -> np.ndarray:
    # Keyed by the config and the files' identity, so an edited list is re-read; the Source object rides
    # along (unhashed by value) only to do the reading.
    return _listing_for(source.cfg.kind, source.cfg.model_dump_json(), identity, _Unhashed(source))


class _Unhashed:
    """Wraps a Source so lru_cache ignores it in the key (all instances compare equal)."""

    def __init__(self, source: Source):
        self.source = source

    def __hash__(self) -> int:
        return 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Unhashed)


def _chunks(it: Iterator[tuple[str, str | None]], n: int) -> Iterator[list[tuple[str, str | None]]]:
    while chunk := list(itertools.islice(it, n)):
        yield chunk
