"""A folder of images with captions in sidecar ``.txt`` files or in a CSV (``file_name,caption``)."""

from __future__ import annotations

import csv
import hashlib
import io
import posixpath

from fourm_core.config import FolderSource

from ..samples import SampleFailure, SampleRef
from .base import Source, expand_paths, file_identity, open_fs

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff",
                  ".JPG", ".JPEG", ".PNG", ".WEBP")


class Folder(Source):
    cfg: FolderSource

    def _listing(self) -> tuple[object, str, list[str], dict[str, str]]:
        fs, root = open_fs(self.cfg.path)
        if not fs.isdir(root):
            raise FileNotFoundError(f"folder source path {self.cfg.path!r} is not a folder; fix 'path' in the config")
        _, files = expand_paths(self.cfg.path, IMAGE_SUFFIXES)
        rels = [posixpath.relpath(f, root.rstrip("/")) for f in files]
        captions = self._csv_captions(fs, root) if self.cfg.captions_csv else {}
        return fs, root.rstrip("/"), rels, captions

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
            return {row["file_name"]: row["caption"] for row in reader}

    def count(self) -> int:
        return len(self._listing()[2])

    def refs(self, start: int, stop: int) -> list[SampleRef]:
        fs, root, rels, captions = self._listing()
        out = []
        for rel in rels[start:stop]:
            if self.cfg.captions_csv:
                caption = captions.get(rel)
            else:
                side = posixpath.join(root, posixpath.splitext(rel)[0] + ".txt")
                caption = fs.cat_file(side).decode("utf-8", "replace").strip() if fs.exists(side) else None
            # the locator keeps the protocol so that load() opens the same filesystem (s3://, memory://, ...)
            out.append(SampleRef(f"folder-{rel}", self.tag, caption, locator=fs.unstrip_protocol(posixpath.join(root, rel))))
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
