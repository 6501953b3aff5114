"""A folder of images with captions in sidecar ``.txt`` files or in a CSV (``file_name,caption``)."""

from __future__ import annotations

import csv
import hashlib
import io
import posixpath
from collections import Counter
from functools import cached_property

from fourm_core.config import FolderSource

from ..samples import SampleFailure, SampleRef
from .base import Source, file_identity, open_fs

# Matched case-insensitively (.BMP, .Jpg, ...): cameras and Windows tools write upper case.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_SIDECAR_SUFFIXES = (".txt", ".csv")  # caption files: not images, not counted as skipped


class Folder(Source):
    cfg: FolderSource

    @property
    def key_prefix(self) -> str:
        fs, root = open_fs(self.cfg.path)
        return "folder-" + (self.cfg.name or posixpath.basename(root.rstrip("/")))

    @cached_property
    def _listing(self) -> tuple[object, str, list[str], dict[str, str], dict[str, int]]:
        """(fs, root, relative paths to list, CSV captions, listing stats); CSV rows naming no file are listed
        after the files, so that loading them reports ``missing_file``."""
        fs, root = open_fs(self.cfg.path)
        if not fs.isdir(root):
            raise FileNotFoundError(f"folder source path {self.cfg.path!r} is not a folder; fix 'path' in the config")
        root = root.rstrip("/")
        rels, skipped = [], Counter()
        for f in sorted(fs.find(root)):
            rel = posixpath.relpath(f, root)
            ext = posixpath.splitext(rel)[1].lower()
            if ext in IMAGE_SUFFIXES:
                rels.append(rel)
            elif ext not in _SIDECAR_SUFFIXES:
                skipped[ext or "(none)"] += 1
        captions = self._csv_captions(fs, root) if self.cfg.captions_csv else {}
        on_disk = set(rels)
        rels += sorted(name for name in captions if name not in on_disk)
        if not rels:
            raise FileNotFoundError(f"folder source {self.cfg.path!r} holds no images ({', '.join(IMAGE_SUFFIXES)}, "
                                    f"any case)")
        return fs, root, rels, captions, {"skipped_files": sum(skipped.values())}

    def _csv_captions(self, fs: object, root: str) -> dict[str, str]:
        path = self.cfg.captions_csv
        assert path is not None
        cfs, cpath = open_fs(path)
        if not cfs.exists(cpath) and not path.startswith(("/", "s3://")):
            cfs, cpath = fs, posixpath.join(root, path)  # relative CSV names live in the folder
        if not cfs.exists(cpath):
            raise FileNotFoundError(f"captions_csv {path!r} not found (also looked in {root}); fix 'captions_csv'")
        with cfs.open(cpath, "rb") as fh:
            reader = csv.DictReader(io.TextIOWrapper(fh, encoding="utf-8", newline=""))
            cols = reader.fieldnames or []
            if "file_name" not in cols or "caption" not in cols:
                raise ValueError(f"captions_csv {path!r} needs a header with 'file_name' and 'caption' columns, "
                                 f"found {cols}")
            return {row["file_name"]: row["caption"] for row in reader if row["file_name"]}

    def listing_stats(self) -> dict[str, int]:
        return self._listing[4]

    def count(self) -> int:
        return len(self._listing[2])

    def refs(self, start: int, stop: int) -> list[SampleRef]:
        fs, root, rels, captions, _ = self._listing
        out = []
        for rel in rels[start:stop]:
            if self.cfg.captions_csv:
                caption = captions.get(rel)
            else:
                side = posixpath.join(root, posixpath.splitext(rel)[0] + ".txt")
                caption = fs.cat_file(side).decode("utf-8", "replace").strip() if fs.exists(side) else None
            # the locator keeps the protocol so that load() opens the same filesystem (s3://, memory://, ...)
            out.append(SampleRef(f"{self.key_prefix}/{rel}", self.tag, caption,
                                 locator=fs.unstrip_protocol(posixpath.join(root, rel))))
        return out

    def load(self, ref: SampleRef) -> bytes:
        fs, path = open_fs(ref.locator)
        try:
            return fs.cat_file(path)
        except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            raise SampleFailure("missing_file", f"{ref.locator}: {exc}") from None

    def slice_digest(self, refs: list[SampleRef]) -> str:
        fs, _ = open_fs(self.cfg.path)
        h = hashlib.sha256(super().slice_digest(refs).encode())
        for r in refs:
            try:
                h.update(file_identity(fs, r.locator).encode())
            except FileNotFoundError:
                h.update(f"{r.locator}@missing".encode())
        return h.hexdigest()
