"""C4-style JSON lines (``.json`` / ``.json.gz``, one ``{"text": ...}`` object per line): text-only samples."""

from __future__ import annotations

import hashlib
import itertools
import json
import posixpath
from functools import lru_cache

from fourm_core.config import C4Source

from ..samples import SampleFailure, SampleRef
from .base import Source, expand_paths, file_identity, open_fs

_SUFFIXES = (".json", ".json.gz", ".jsonl", ".jsonl.gz")


@lru_cache(maxsize=64)
def _line_count(uri: str, identity: str) -> int:
    fs, path = open_fs(uri)
    with fs.open(path, "rb", compression="infer") as fh:
        return sum(1 for line in fh if line.strip())


def _stem(path: str) -> str:
    """The file name without its suffix and without a leading ``c4-`` (the key adds that prefix once)."""
    name = posixpath.basename(path)
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name[3:] if name.startswith("c4-") else name


class C4(Source):
    text = True
    cfg: C4Source

    def _files(self) -> list[tuple[str, int]]:
        fs, files = expand_paths(self.cfg.path, _SUFFIXES)
        return [(f, _line_count(fs.unstrip_protocol(f), file_identity(fs, f)))
                for f in files]

    def count(self) -> int:
        n = sum(c for _, c in self._files())
        return min(n, self.cfg.limit) if self.cfg.limit else n

    def refs(self, start: int, stop: int) -> list[SampleRef]:
        fs, _ = open_fs(self.cfg.path)
        stop = min(stop, self.count())
        out: list[SampleRef] = []
        offset = 0
        for f, n in self._files():
            lo, hi = max(start, offset), min(stop, offset + n)
            if lo < hi:
                with fs.open(f, "rt", encoding="utf-8", errors="replace", compression="infer") as fh:
                    # samples are the non-blank lines; keys carry the physical (1-based) line number
                    lines = ((no, ln) for no, ln in enumerate(fh, start=1) if ln.strip())
                    for no, line in itertools.islice(lines, lo - offset, hi - offset):
                        out.append(self._ref(f, no, line))
            offset += n
            if offset >= stop:
                break
        return out

    def _ref(self, path: str, line_no: int, line: str) -> SampleRef:
        key = f"c4-{_stem(path)}-{line_no:07d}"
        try:
            doc = json.loads(line)
            text = doc.get("text") if isinstance(doc, dict) else None
            if not isinstance(text, str):
                return SampleRef(key, self.tag, None, locator=("bad", f"line {line_no}: no string 'text' field"))
        except json.JSONDecodeError as exc:
            return SampleRef(key, self.tag, None, locator=("bad", f"invalid JSON: {exc}"))
        # the whole text: quality filters see the document; the builder truncates to max_chars after them
        return SampleRef(key, self.tag, text, locator=(path, line_no))

    def load(self, ref: SampleRef) -> str:
        if ref.locator[0] == "bad":
            raise SampleFailure("decode_error", ref.locator[1])
        if not (ref.caption or "").strip():
            raise SampleFailure("empty_text", "the document's text is empty")
        return ref.caption

    def slice_digest(self, refs: list[SampleRef]) -> str:
        return hashlib.sha256(super().slice_digest(refs).encode()).hexdigest()

