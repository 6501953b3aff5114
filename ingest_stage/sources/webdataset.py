"""WebDataset tar shards: samples are members sharing a basename prefix (``k.jpg`` + ``k.txt`` or ``k.json``).

The listing records where each image member's bytes sit in its tar (offset, size), so loading one
sample is a ranged read on local files and object stores alike; compressed tars fall back to tarfile.
A tar that ends early (an interrupted download) keeps its readable samples; what could not be read is
one ``truncated_archive`` failure named after the tar (a tar that cannot be read at all: ``bad_archive``).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import tarfile
import zlib
from dataclasses import dataclass
from functools import lru_cache

from fourm_core.config import WebDatasetSource

from ..samples import SampleFailure, SampleRef
from .base import Source, expand_paths, file_identity, open_fs, source_root

_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
_CAPTION_EXTS = ("txt", "caption", "text")
_JSON_CAPTION_KEYS = ("caption", "text", "txt")  # img2dataset writes {"caption": ...} in k.json
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


@dataclass(frozen=True)
class Member:
    tar: str
    name: str
    offset: int
    size: int
    compressed: bool


@dataclass(frozen=True)
class Broken:
    """A placeholder sample for the unreadable part of a tar: loading it raises ``reason``."""

    tar: str
    reason: str
    detail: str


def _split(name: str) -> tuple[str, str]:
    """WebDataset convention: the key is everything up to the first dot of the basename."""
    d, base = posixpath.split(name)
    stem, _, ext = base.partition(".")
    return posixpath.join(d, stem), ext.lower()


def _json_caption(data: bytes) -> str | None:
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if isinstance(doc, dict):
        for k in _JSON_CAPTION_KEYS:
            if isinstance(doc.get(k), str):
                return doc[k]
    return None


@lru_cache(maxsize=16)
def _scan_tar(path_uri: str, identity: str) -> tuple[tuple[tuple[str, Member | None, str | None], ...], Broken | None]:
    """((key, image member, caption) for each readable sample of one tar in member order, what broke or None)."""
    fs, path = open_fs(path_uri)
    compressed = not path.endswith(".tar")
    size = fs.size(path)
    samples: dict[str, dict] = {}
    broken = None
    try:
        with fs.open(path, "rb") as fh, tarfile.open(fileobj=fh, mode="r:*") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                if not compressed and m.offset_data + m.size > size:  # the header made it, the data did not
                    raise EOFError(f"member {m.name} ends at byte {m.offset_data + m.size} of {size}")
                key, ext = _split(m.name)
                entry = samples.setdefault(key, {"image": None, "caption": None, "json": None})
                if ext in _IMAGE_EXTS and entry["image"] is None:
                    entry["image"] = Member(path_uri, m.name, m.offset_data, m.size, compressed)
                elif ext in _CAPTION_EXTS or ext == "json":
                    f = tf.extractfile(m)
                    data = f.read() if f else b""
                    if ext == "json":
                        entry["json"] = _json_caption(data)
                    else:
                        entry["caption"] = data.decode("utf-8", "replace").strip()
    except (tarfile.ReadError, EOFError, zlib.error, OSError) as exc:
        reason = "truncated_archive" if samples or "end of" in str(exc) or isinstance(exc, EOFError) else "bad_archive"
        broken = Broken(path_uri, reason, f"{path_uri}: {type(exc).__name__}: {exc} (after {len(samples)} readable "
                                          f"sample(s); the rest of the tar is lost)")
    out = tuple((k, v["image"], v["caption"] if v["caption"] is not None else v["json"]) for k, v in samples.items())
    return out, broken


class WebDataset(Source):
    cfg: WebDatasetSource

    @property
    def key_prefix(self) -> str:
        return "wds-" + (self.cfg.name or posixpath.basename(source_root(self.cfg.path)))

    def _listing(self) -> list[tuple[str, str, Member | Broken | None, str | None]]:
        fs, files = expand_paths(self.cfg.path, _TAR_SUFFIXES)
        root = source_root(self.cfg.path)
        proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        out = []
        for f in files:
            uri = f if proto in ("file", "local") else f"{proto}://{f}"
            rel = posixpath.relpath(f, root) if root else f
            for suffix in _TAR_SUFFIXES:
                if rel.endswith(suffix):
                    rel = rel[: -len(suffix)]
                    break
            samples, broken = _scan_tar(uri, file_identity(fs, f))
            for key, member, caption in samples:
                out.append((f"{self.key_prefix}/{rel}/{key}", uri, member, caption))
            if broken is not None:
                out.append((f"{self.key_prefix}/{rel}/#{broken.reason}", uri, broken, None))
        return out

    def count(self) -> int:
        return len(self._listing())

    def refs(self, start: int, stop: int) -> list[SampleRef]:
        return [SampleRef(key, self.tag, caption, locator=member or f"{uri}::{key}")
                for key, uri, member, caption in self._listing()[start:stop]]

    def load(self, ref: SampleRef) -> bytes:
        member = ref.locator
        if isinstance(member, Broken):
            raise SampleFailure(member.reason, member.detail)
        if not isinstance(member, Member):
            raise SampleFailure("missing_file", f"sample {ref.locator} has no image member ({', '.join(_IMAGE_EXTS)})")
        fs, path = open_fs(member.tar)
        if member.compressed:
            with fs.open(path, "rb") as fh, tarfile.open(fileobj=fh, mode="r:*") as tf:
                f = tf.extractfile(member.name)
                if f is None:
                    raise SampleFailure("missing_file", f"{member.tar}::{member.name} is not a file")
                return f.read()
        with fs.open(path, "rb") as fh:
            fh.seek(member.offset)
            return fh.read(member.size)

    def slice_digest(self, refs: list[SampleRef]) -> str:
        h = hashlib.sha256(super().slice_digest(refs).encode())
        tars = sorted({r.locator.tar for r in refs if isinstance(r.locator, (Member, Broken))})
        for t in tars:
            tfs, tp = open_fs(t)
            h.update(file_identity(tfs, tp).encode())
        return h.hexdigest()
