"""Source bugs found by trying real-corpus mess (issue #17): each test failed before its fix."""

from __future__ import annotations

import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest_stage import plan_shards, run_shard
from ingest_stage.__main__ import main

from . import media


def _errors(store, name: str, artifact: str, shard: int = 0) -> dict[str, str]:
    return {e["sample_key"]: e["reason"] for e in store.read_errors(name, artifact, shard).to_pylist()}


def test_truncated_tar_keeps_readable_members_and_names_the_tar(make_config, store, tmp_path, capsys):
    d = tmp_path / "wds"
    d.mkdir()
    media.write_tar(d / "a.tar", {"0.jpg": media.jpeg(seed=61), "0.txt": b"good a"})
    media.write_tar(d / "b.tar", {"0.jpg": media.jpeg(seed=62), "0.txt": b"good b", "1.jpg": media.jpeg(seed=63),
                       "1.txt": b"lost", "2.jpg": media.jpeg(seed=64)})
    whole = (d / "b.tar").read_bytes()
    with tarfile.open(d / "b.tar") as tf:
        cut = tf.getmember("1.jpg").offset_data + 100
    (d / "b.tar").write_bytes(whole[:cut])  # an interrupted download: the tail (and the end blocks) are gone
    cfg = make_config([{"kind": "webdataset", "path": str(d)}], shard_size=10, shorter_side=32)
    assert plan_shards(store, cfg) == [0]
    run_shard(store, cfg, 0)
    rows = store.read_table("t", "images", 0).to_pylist()
    assert sorted(r["caption"] for r in rows) == ["good a", "good b"]
    errors = store.read_errors("t", "images", 0).to_pylist()
    [trunc] = [e for e in errors if e["reason"] == "truncated_archive"]
    assert "b.tar" in trunc["detail"]
    # the CLI reports it as a per-sample failure, not a traceback
    yaml_path = tmp_path / "w.yaml"
    yaml_path.write_text(f"name: w\nsources: [{{kind: webdataset, path: {d}}}]\n")
    assert main(["--dataset", str(yaml_path), "--root", str(tmp_path / "s2"), "--no-progress"]) == 0
    assert "truncated_archive" in capsys.readouterr().out


def test_c4_object_without_text_is_one_decode_error(make_config, store, tmp_path):
    f = tmp_path / "c4-x.json"
    f.write_text("\n".join([json.dumps({"text": "a fine document"}), json.dumps({"url": "u"}), "[1, 2]", "null",
                            json.dumps({"text": 42})]) + "\n")
    cfg = make_config([{"kind": "c4_jsonl", "path": str(f)}], shard_size=10)
    run_shard(store, cfg, 0)
    assert store.read_table("t", "texts", 0).num_rows == 1
    assert sorted(_errors(store, "t", "texts").values()) == ["decode_error"] * 4


def test_c4_keys_have_one_prefix_and_physical_line_numbers(make_config, store, tmp_path):
    f = tmp_path / "c4-train.00000-of-01024.json"
    f.write_text(json.dumps({"text": "first"}) + "\n\n\n" + json.dumps({"text": "on line four"}) + "\n")
    cfg = make_config([{"kind": "c4_jsonl", "path": str(f)}], shard_size=10)
    run_shard(store, cfg, 0)
    keys = store.read_table("t", "texts", 0).column("sample_key").to_pylist()
    assert keys == ["c4-train.00000-of-01024-0000001", "c4-train.00000-of-01024-0000004"]


def test_listing_error_leaves_a_failure_record(make_config, store, tmp_path):
    d = tmp_path / "wds"
    d.mkdir()
    media.write_tar(d / "a.tar", {"0.jpg": media.jpeg(seed=61)})
    cfg = make_config([{"kind": "webdataset", "path": str(d)}], shard_size=10)
    from ingest_stage.plan import build_plan

    plan = build_plan(cfg)
    (d / "a.tar").unlink()  # the source changes between planning and the shard's listing
    with pytest.raises(FileNotFoundError, match="holds no files"):
        run_shard(store, cfg, 0, plan=plan)
    failed = store.failed_shards("t", "images")
    assert 0 in failed and "holds no files" in failed[0]["error"]


def test_folder_suffixes_are_case_insensitive_and_skips_are_counted(make_config, store, tmp_path, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    from PIL import Image

    for name, fmt in [("a.BMP", "BMP"), ("b.GIF", "GIF"), ("c.TIF", "TIFF"), ("d.TIFF", "TIFF"), ("e.Jpg", "JPEG")]:
        Image.fromarray(media.gradient(80, 80, seed=len(name) + ord(name[0]))).save(d / name, fmt)
    (d / "readme.md").write_text("not an image")
    (d / "f.xyz").write_bytes(b"?")
    cfg = make_config([{"kind": "folder", "path": str(d)}], shard_size=10, shorter_side=32)
    run_shard(store, cfg, 0)
    assert store.read_table("t", "images", 0).num_rows == 5
    assert store.read_manifest("t", "images", 0).stats["skipped_files"] == 2
    yaml_path = tmp_path / "f.yaml"
    yaml_path.write_text(f"name: f\nsources: [{{kind: folder, path: {d}}}]\n")
    assert main(["--dataset", str(yaml_path), "--root", str(tmp_path / "s2"), "--no-progress"]) == 0
    assert "skipped_files 2" in capsys.readouterr().out  # the CLI reports what it skipped


def test_two_folders_with_the_same_file_name_keep_both_images(make_config, store, tmp_path):
    for sub, seed in (("x", 71), ("y", 72)):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "a.jpg").write_bytes(media.jpeg(seed=seed))
    cfg = make_config([{"kind": "folder", "path": str(tmp_path / "x")}, {"kind": "folder", "path": str(tmp_path / "y")}],
                      shard_size=10, shorter_side=32)
    run_shard(store, cfg, 0)
    keys = store.read_table("t", "images", 0).column("sample_key").to_pylist()
    assert len(keys) == 2 and len(set(keys)) == 2


def test_two_webdataset_sources_with_the_same_tar_name_keep_both(make_config, store, tmp_path):
    for sub, seed in (("x", 73), ("y", 74)):
        (tmp_path / sub).mkdir()
        media.write_tar(tmp_path / sub / "shard-000.tar", {"0.jpg": media.jpeg(seed=seed)})
    cfg = make_config([{"kind": "webdataset", "path": str(tmp_path / "x")},
                       {"kind": "webdataset", "path": str(tmp_path / "y")}], shard_size=10, shorter_side=32)
    run_shard(store, cfg, 0)
    assert store.read_table("t", "images", 0).num_rows == 2


def test_null_url_is_bad_url_with_its_own_key(make_config, store, tmp_path):
    pq.write_table(pa.table({"url": [None, None, "ftp://x/y.jpg"], "text": ["a", "b", "c"]}), tmp_path / "p.parquet")
    cfg = make_config([{"kind": "url_parquet", "path": str(tmp_path / "p.parquet")}], shard_size=10)
    run_shard(store, cfg, 0)
    errors = store.read_errors("t", "images", 0).to_pylist()
    assert sorted(e["reason"] for e in errors) == ["bad_scheme", "bad_url", "bad_url"]
    assert len({e["sample_key"] for e in errors}) == 3


def test_webdataset_json_captions_are_read(make_config, store, tmp_path):
    d = tmp_path / "wds"
    d.mkdir()
    media.write_tar(d / "a.tar", {"0.jpg": media.jpeg(seed=75), "0.json": json.dumps({"caption": "from json"}).encode(),
                       "1.jpg": media.jpeg(seed=76), "1.json": json.dumps({"text": "json text"}).encode()})
    cfg = make_config([{"kind": "webdataset", "path": str(d)}], shard_size=10, shorter_side=32)
    run_shard(store, cfg, 0)
    assert sorted(store.read_table("t", "images", 0).column("caption").to_pylist()) == ["from json", "json text"]


def test_captions_csv_gaps_are_reported(make_config, store, tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "a.jpg").write_bytes(media.jpeg(seed=77))
    (d / "b.jpg").write_bytes(media.jpeg(seed=78))
    (d / "caps.csv").write_text("file_name,caption\na.jpg,cap a\nghost.jpg,names no file\n")
    cfg = make_config([{"kind": "folder", "path": str(d), "captions_csv": "caps.csv"}], shard_size=10, shorter_side=32)
    run_shard(store, cfg, 0)
    assert store.read_table("t", "images", 0).num_rows == 2
    errors = store.read_errors("t", "images", 0).to_pylist()
    assert [(e["reason"], "ghost.jpg" in e["sample_key"]) for e in errors] == [("missing_file", True)]
    assert store.read_manifest("t", "images", 0).stats["no_caption"] == 1  # b.jpg has no CSV row


def test_two_sources_with_one_key_prefix_need_a_name(make_config, store, tmp_path):
    from fourm_core.config import ConfigError

    for parent, seed in (("p", 79), ("q", 80)):
        (tmp_path / parent / "images").mkdir(parents=True)
        (tmp_path / parent / "images" / "a.jpg").write_bytes(media.jpeg(seed=seed))
    both = [{"kind": "folder", "path": str(tmp_path / p / "images")} for p in ("p", "q")]
    with pytest.raises(ConfigError, match="name:"):
        plan_shards(store, make_config(both))
    both[1]["name"] = "images-q"
    cfg = make_config(both, shard_size=10, shorter_side=32)
    run_shard(store, cfg, 0)
    assert sorted(store.read_table("t", "images", 0).column("sample_key").to_pylist()) == [
        "folder-images-q/a.jpg", "folder-images/a.jpg"]
