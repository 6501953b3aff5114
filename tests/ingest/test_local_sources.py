"""Local and fsspec sources: folder (sidecar .txt or CSV captions), WebDataset tars, C4 JSON lines."""

from __future__ import annotations

import gzip
import json

import fsspec
import pytest

from fourm_core import ArtifactStore
from fourm_core.config import ConfigError
from ingest_stage import plan_shards, run_shard

from . import media


def _folder(tmp_path, sidecars: bool = True):
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    (d / "a.jpg").write_bytes(media.jpeg(seed=31))
    (d / "b.png").write_bytes(media.png(seed=32))
    (d / "sub" / "c.webp").write_bytes(media.webp(seed=33))
    (d / "broken.jpg").write_bytes(media.truncated_jpeg())
    (d / "notes.md").write_text("not an image, not listed")
    if sidecars:
        (d / "a.txt").write_text("caption of a\n")
        (d / "sub" / "c.txt").write_text("caption of c")
    return d


def test_folder_with_sidecar_captions(make_config, store, tmp_path):
    d = _folder(tmp_path)
    cfg = make_config([{"kind": "folder", "path": str(d)}], shard_size=3, shorter_side=32)
    assert plan_shards(store, cfg) == [0, 1]
    for s in (0, 1):
        run_shard(store, cfg, s)
    rows = store.read_table("t", "images", 0).to_pylist() + store.read_table("t", "images", 1).to_pylist()
    caps = {r["sample_key"]: r["caption"] for r in rows}
    assert caps == {"folder-photos/a.jpg": "caption of a", "folder-photos/b.png": None, "folder-photos/sub/c.webp": "caption of c"}
    errors = store.read_errors("t", "images", 0).to_pylist() + store.read_errors("t", "images", 1).to_pylist()
    assert [(e["sample_key"], e["reason"]) for e in errors] == [("folder-photos/broken.jpg", "decode_error")]


def test_folder_with_csv_captions_and_edit_invalidates(make_config, store, tmp_path):
    d = _folder(tmp_path, sidecars=False)
    (d / "captions.csv").write_text('file_name,caption\na.jpg,"a, with a comma"\nsub/c.webp,see c\n')
    cfg = make_config([{"kind": "folder", "path": str(d), "captions_csv": "captions.csv"}], shard_size=10)
    run_shard(store, cfg, 0)
    caps = {r["sample_key"]: r["caption"] for r in store.read_table("t", "images", 0).to_pylist()}
    assert caps["folder-photos/a.jpg"] == "a, with a comma" and caps["folder-photos/sub/c.webp"] == "see c"
    assert run_shard(store, cfg, 0)[0].status.value == "cached"
    (d / "b.png").write_bytes(media.png(seed=99))  # an edited input file recomputes its shard
    assert run_shard(store, cfg, 0)[0].status.value == "done"


def test_folder_bad_csv_names_the_fix(make_config, store, tmp_path):
    d = _folder(tmp_path, sidecars=False)
    (d / "caps.csv").write_text("name,text\na.jpg,x\n")
    cfg = make_config([{"kind": "folder", "path": str(d), "captions_csv": "caps.csv"}])
    with pytest.raises(ValueError, match="'file_name' and 'caption'"):
        run_shard(store, cfg, 0)
    missing = make_config([{"kind": "folder", "path": str(tmp_path / "nope")}])
    with pytest.raises(FileNotFoundError, match="nope"):
        plan_shards(store, missing)


@pytest.mark.parametrize("gz", [False, True])
def test_webdataset_tars(make_config, store, tmp_path, gz):
    d = tmp_path / "wds"
    d.mkdir()
    media.write_tar(d / "shard-000.tar", {"s0/000.jpg": media.jpeg(seed=41), "s0/000.txt": b"first caption",
                               "s0/001.png": media.png(seed=42), "s0/001.txt": b"second",
                               "s0/002.txt": b"caption without image"})
    media.write_tar(d / "shard-001.tar", {"100.webp": media.webp(seed=43), "100.txt": b"third", "101.jpg": media.HTML})
    if gz:
        for t in d.glob("*.tar"):
            (d / (t.name + ".gz")).write_bytes(gzip.compress(t.read_bytes()))
            t.unlink()
    cfg = make_config([{"kind": "webdataset", "path": str(d)}], shard_size=10, shorter_side=32)
    run_shard(store, cfg, 0)
    rows = store.read_table("t", "images", 0).to_pylist()
    assert [(r["sample_key"], r["caption"]) for r in rows] == [
        ("wds-wds/shard-000/s0/000", "first caption"), ("wds-wds/shard-000/s0/001", "second"),
        ("wds-wds/shard-001/100", "third")]
    errors = {e["sample_key"]: e["reason"] for e in store.read_errors("t", "images", 0).to_pylist()}
    assert errors == {"wds-wds/shard-000/s0/002": "missing_file", "wds-wds/shard-001/101": "not_image"}


def test_c4_jsonl_gz_texts(make_config, store, tmp_path):
    d = tmp_path / "c4"
    d.mkdir()
    docs = [{"text": f"document number {i} " * 5, "url": f"https://example.com/{i}"} for i in range(4)]
    d0, d1, d2, d3 = (json.dumps(x) for x in docs)
    lines = [d0, d1, d0, d2, "{not json", json.dumps({"text": ""}), d3, d0]
    with gzip.open(d / "c4-train.00000-of-01024.json.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    cfg = make_config([{"kind": "c4_jsonl", "path": str(d), "max_chars": 30}], shard_size=4)
    assert plan_shards(store, cfg) == [0, 1]
    for s in (0, 1):
        run_shard(store, cfg, s)
    t0, t1 = store.read_table("t", "texts", 0).to_pylist(), store.read_table("t", "texts", 1).to_pylist()
    assert [t["sample_key"][-2:] for t in t0] == ["01", "02", "04"]  # physical line numbers, from 1
    assert [t["sample_key"][-2:] for t in t1] == ["07", "08"]
    assert t0[0]["sample_key"] == "c4-train.00000-of-01024-0000001"
    assert all(len(t["caption"]) <= 30 for t in t0 + t1) and t0[0]["caption"] == docs[0]["text"][:30]
    e0 = [(e["sample_key"][-2:], e["reason"]) for e in store.read_errors("t", "texts", 0).to_pylist()]
    e1 = [(e["sample_key"][-2:], e["reason"]) for e in store.read_errors("t", "texts", 1).to_pylist()]
    assert e0 == [("03", "duplicate_content")]
    assert e1 == [("05", "decode_error"), ("06", "empty_text")]
    assert store.read_manifest("t", "texts", 1).stats["ok"] == 2
    # line 7 repeats line 0 but lands in another shard: content de-duplication is per shard (docs/ingest.md)


def test_text_and_image_sources_do_not_mix(make_config, store, tmp_path):
    cfg = make_config([{"kind": "c4_jsonl", "path": str(tmp_path)}, {"kind": "skimage_photos"}])
    with pytest.raises(ConfigError, match="text_only"):
        plan_shards(store, cfg)


def test_sources_read_through_fsspec(make_config, tmp_path):
    """Sources open paths with fsspec, so object-store URIs work; memory:// stands in for s3:// here."""
    fs = fsspec.filesystem("memory")
    fs.pipe("/src/imgs/x.jpg", media.jpeg(seed=51))
    fs.pipe("/src/imgs/x.txt", b"from memory")
    fs.pipe("/src/list.tsv", b"file:///etc/hostname\tnot fetched\n")
    cfg = make_config([{"kind": "folder", "path": "memory://src/imgs"},
                       {"kind": "url_tsv", "path": "memory://src/list.tsv"}], shard_size=10)
    store = ArtifactStore("memory://out")
    run_shard(store, cfg, 0)
    [row] = store.read_table("t", "images", 0).to_pylist()
    assert row["caption"] == "from memory"
    assert store.read_errors("t", "images", 0).column("reason").to_pylist() == ["bad_scheme"]
