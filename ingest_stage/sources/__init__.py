"""Sources: one class per configured source kind (fourm_core.config source models)."""

from __future__ import annotations

from typing import Any

from .base import Source
from .c4 import C4
from .folder import Folder
from .offline import SkimagePhotos, Synthetic
from .urllists import UrlParquet, UrlTsv
from .webdataset import WebDataset

SOURCE_CLASSES: dict[str, type[Source]] = {
    "url_tsv": UrlTsv, "url_parquet": UrlParquet, "folder": Folder, "webdataset": WebDataset,
    "c4_jsonl": C4, "synthetic": Synthetic, "skimage_photos": SkimagePhotos,
}


def make_source(cfg: Any, position: int) -> Source:
    return SOURCE_CLASSES[cfg.kind](cfg, position)


__all__ = ["SOURCE_CLASSES", "Source", "make_source"]
