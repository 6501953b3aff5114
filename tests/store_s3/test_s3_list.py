"""The fast S3 listing of the cached check's size comparison (fourm_core.s3list) gives exactly what fsspec's
listing gives: every object directly under the folder with its size, over several pages, nothing from
sub-folders; a missing folder is empty; a truncated data file shows its new size in ``data_sizes``."""

from __future__ import annotations

import posixpath

import pytest

from fourm_core.s3list import s3_sizes
from fourm_core.store import ArtifactStore


@pytest.fixture
def s3_store(s3_root):
    root, options = s3_root
    return ArtifactStore(root, options)


def test_matches_fsspec_listing_over_pages(s3_store):
    folder = s3_store.artifact_dir("ds", "sizes")
    files = {f"shard-{i:05d}.parquet": b"x" * (i % 17 + 1) for i in range(30)}
    files["shard-00003.manifest.json"] = b"{}"
    s3_store.fs.pipe({posixpath.join(folder, n): d for n, d in files.items()})
    s3_store.write_bytes(posixpath.join(folder, "sub", "shard-00001.parquet"), b"deeper")  # not listed
    fast = s3_sizes(s3_store.fs, folder, page_keys=7)  # 5 pages
    slow = {posixpath.basename(i["name"]): int(i["size"]) for i in s3_store.fs.ls(folder, detail=True, refresh=True)
            if i["type"] == "file"}
    assert fast == slow == {n: len(d) for n, d in files.items()}
    assert s3_sizes(s3_store.fs, s3_store.artifact_dir("ds", "nothing-here")) == {}


def test_data_sizes_see_a_truncated_file(s3_store):
    folder = s3_store.artifact_dir("ds", "trunc")
    s3_store.write_bytes(posixpath.join(folder, "shard-00000.parquet"), b"y" * 900)
    s3_store.write_bytes(posixpath.join(folder, "shard-00000.errors.parquet"), b"e")
    assert s3_store.data_sizes("ds", "trunc") == {0: 900}
    s3_store.write_bytes(posixpath.join(folder, "shard-00000.parquet"), b"y" * 500)
    s3_store.invalidate()
    assert s3_store.data_sizes("ds", "trunc") == {0: 500}


def test_not_s3_is_left_to_fsspec(tmp_path):
    assert s3_sizes(ArtifactStore(str(tmp_path)).fs, str(tmp_path)) is None
