"""WebDataset tar shards: samples are members sharing a basename prefix (``k.jpg`` + ``k.txt``).

The listing records where each image member's bytes sit in its tar (offset, size), so loading one
sample is a ranged read on local files and object stores alike; compressed tars fall back to tarfile.
"""

from __future__ import annotations

import hashlib
import posixpath
import tarfile
from dataclasses import dataclass
from functools import lru_cache

from fourm_core.config import WebDatasetSource

from ..samples import SampleFailure, SampleRef
from .base import Source, expand_paths, file_identity, open_fs

_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
_CAPTION_EXTS = ("txt", "caption", "text")


@dataclass(frozen=True)
class Member:
    tar: str
    name: str
    offset: int
    size: int
    compressed: bool


def _split(name: str) -> tuple[str, str]:
    """WebDataset convention: the key is everything up to the first dot of the basename."""
    d, base = posixpath.split(name)
    stem, _, ext = base.partition(".")
    return posixpath.join(d, stem), ext.lower()


@lru_cache(maxsize=16)
def _scan_tar(path_uri: str, identity: str) -> tuple[tuple[str, Member | None, str | None], ...]:
    """(key, image member, caption) for each sample of one tar, in member order."""
    fs, path = open_fs(path_uri)
    compressed = not path.endswith(".tar")
    samples: dict[str, dict] = {}
    with fs.open(path, "rb") as fh, tarfile.open(fileobj=fh, mode="r:*") as tf:
        for m in tf:
            if not m.isfile():
                continue
            key, ext = _split(m.name)
            entry = samples.setdefault(key, {"image": None, "caption": None})
            if ext in _IMAGE_EXTS and entry["image"] is None:
                entry["image"] = Member(path_uri, m.name, m.offset_data, m.size, compressed)
            elif ext in _CAPTION_EXTS:
                f = tf.extractfile(m)
                entry["caption"] = f.read().decode("utf-8", "replace").strip() if f else None
    return tuple((k, v["image"], v["caption"]) for k, v in samples.items())


class WebDataset(Source):
    cfg: WebDatasetSource

    def _listing(self) -> list[tuple[str, str, Member | None, str | None]]:
        fs, files = expand_paths(self.cfg.path, (".tar", ".tar.gz", ".tgz"))
        proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        out = []
        for f in files:
            uri = f if proto in ("file", "local") else f"{proto}://{f}"
            stem = posixpath.basename(f).split(".")[0]
            for key, member, caption in _scan_tar(uri, file_identity(fs, f)):
                out.append((f"wds-{stem}-{key}", uri, member, caption))
        return out

    def count(self) -> int:
        return len(self._listing())

    def refs(self, start: int, stop: int) -> list[SampleRef]:
        return [SampleRef(key, self.tag, caption, locator=member or f"{uri}::{key}")
                for key, uri, member, caption in self._listing()[start:stop]]

    def load(self, ref: SampleRef) -> bytes:
        member = ref.locator
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
        fs, files = expand_paths(self.cfg.path, (".tar", ".tar.gz", ".tgz"))
        h = hashlib.sha256(super().slice_digest(refs).encode())
        tars = sorted({r.locator.tar for r in refs if isinstance(r.locator, Member)})
        for t in tars:
            tfs, tp = open_fs(t)
            h.update(file_identity(tfs, tp).encode())
        return h.hexdigest()
