"""The dedup stage: exact and perceptual duplicates across shards and datasets, recorded, never dropped."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from pydantic import ValidationError
from PIL import Image, ImageEnhance

from fourm_core.config import ConfigError
from ingest_stage import run_shard as ingest
from ingest_stage.dedup import DedupConfig, hamming, run_shard as dedup


def _photo(name: str, side: int = 160, fmt: str = "PNG", tweak: float | None = None) -> bytes:
    import skimage.data

    im = Image.fromarray(getattr(skimage.data, name)()[..., :3]).resize((side, side))
    if tweak is not None:  # a re-encoded, slightly brighter copy: other pixels, same picture
        im = ImageEnhance.Brightness(im).enhance(tweak)
    buf = io.BytesIO()
    im.save(buf, fmt, **({"quality": 80} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.fixture
def two_datasets(make_config, store, tmp_path):
    base, mine = tmp_path / "base", tmp_path / "mine"
    base.mkdir(), mine.mkdir()
    (base / "p.png").write_bytes(_photo("astronaut"))
    (base / "q.png").write_bytes(_photo("coffee"))
    (mine / "00.png").write_bytes(_photo("astronaut"))  # exact copy of base/p.png
    (mine / "01.png").write_bytes(_photo("chelsea"))
    (mine / "02.png").write_bytes(_photo("chelsea"))  # exact copy of 01, in the next shard
    (mine / "03.jpg").write_bytes(_photo("chelsea", fmt="JPEG", tweak=1.08))  # near copy of 01
    (mine / "04.png").write_bytes(_photo("rocket"))
    kw = {"shard_size": 2, "shorter_side": 64}
    b = make_config([{"kind": "folder", "path": str(base)}], name="base", **kw)
    m = make_config([{"kind": "folder", "path": str(mine)}], name="mine", **kw)
    m = m.model_copy(update={"dedup": {"against": ["base"], "near_max_distance": 8}})
    return b, m, base


def test_exact_and_near_duplicates_across_shards_and_datasets(two_datasets, store):
    base_cfg, cfg, base_dir = two_datasets
    ingest(store, base_cfg, 0)
    ingest(store, cfg, 1)
    with pytest.raises(RuntimeError, match="not committed: 0"):  # shard 1 needs shard 0 ingested first
        dedup(store, cfg, 1)
    assert 1 in store.failed_shards("mine", "dedup")
    for s in (0, 2):
        ingest(store, cfg, s)
    results = [dedup(store, cfg, s)[0] for s in (0, 1, 2)]
    assert [r.status.value for r in results] == ["done"] * 3
    rows = [r for s in (0, 1, 2) for r in store.read_table("mine", "dedup", s).to_pylist()]
    got = {r["sample_key"]: (r["kind"], r["duplicate_of"], r["duplicate_of_dataset"], r["duplicate_of_shard"])
           for r in rows}
    assert got == {
        "folder-mine/00.png": ("exact", "folder-base/p.png", "base", 0),
        "folder-mine/02.png": ("exact", "folder-mine/01.png", "mine", 0),
        "folder-mine/03.jpg": ("near", "folder-mine/01.png", "mine", 0),
    }
    assert next(r["distance"] for r in rows if r["kind"] == "near") <= 8  # other pixels, (nearly) the same pHash
    # nothing is dropped: the images are all still there, the decisions sit beside them
    assert sum(store.read_table("mine", "images", s).num_rows for s in (0, 1, 2)) == 5
    assert store.read_manifest("mine", "dedup", 1).stats["exact"] == 1
    # cached while nothing before it changes; a grown 'against' dataset re-runs it
    assert dedup(store, cfg, 2)[0].status.value == "cached"
    (base_dir / "r.png").write_bytes(_photo("rocket"))
    ingest(store, base_cfg, 1)
    assert dedup(store, cfg, 2)[0].status.value == "done"
    [row] = store.read_table("mine", "dedup", 2).to_pylist()
    assert (row["sample_key"], row["duplicate_of"]) == ("folder-mine/04.png", "folder-base/r.png")
    # exact only, when near_max_distance is not set
    exact_only = cfg.model_copy(update={"dedup": {"against": ["base"]}})
    dedup(store, exact_only, 1)
    assert [r["kind"] for r in store.read_table("mine", "dedup", 1).to_pylist()] == ["exact"]


def test_text_duplicates_across_shards(make_config, store, tmp_path):
    f = tmp_path / "c4-d.json"
    f.write_text("\n".join(json.dumps({"text": t}) for t in ["one doc", "two doc", "one doc", "three"]) + "\n")
    cfg = make_config([{"kind": "c4_jsonl", "path": str(f)}], shard_size=2)
    for s in (0, 1):
        ingest(store, cfg, s)
        dedup(store, cfg, s)
    assert store.read_table("t", "dedup", 0).num_rows == 0
    [row] = store.read_table("t", "dedup", 1).to_pylist()
    assert row["kind"] == "exact" and row["duplicate_of"].endswith("0000001") and row["sample_key"].endswith("0000003")


def test_config_and_hamming():
    with pytest.raises(ValidationError, match="near"):  # an unknown field is refused, naming it
        DedupConfig.model_validate({"near": 3})
    a = np.array([0, 0xFF, 2**64 - 1], dtype=np.uint64)
    assert hamming(a, 0).tolist() == [0, 8, 64]


def test_dedup_against_itself_is_refused(make_config, store, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.png").write_bytes(_photo("coffee"))
    cfg = make_config([{"kind": "folder", "path": str(tmp_path / "x")}], name="x")
    ingest(store, cfg, 0)
    with pytest.raises(ConfigError, match="itself"):
        dedup(store, cfg.model_copy(update={"dedup": {"against": ["x"]}}), 0)


def test_dedup_on_an_s3_store(s3_root, make_config, tmp_path):
    """Digest files are committed and found on a real S3 server (listing entries carry ETags, not mtimes)."""
    from fourm_core import ArtifactStore

    root, options = s3_root
    store = ArtifactStore(root, options)
    d = tmp_path / "imgs"
    d.mkdir()
    for i, name in enumerate(["coffee", "rocket", "coffee"]):
        (d / f"{i}.png").write_bytes(_photo(name, side=96))
    cfg = make_config([{"kind": "folder", "path": str(d)}], shard_size=2, shorter_side=32)
    for s in (0, 1):
        ingest(store, cfg, s)
        dedup(store, cfg, s)
    [row] = store.read_table("t", "dedup", 1).to_pylist()
    assert (row["sample_key"], row["duplicate_of"], row["kind"]) == ("folder-imgs/2.png", "folder-imgs/0.png", "exact")
    assert dedup(store, cfg, 1)[0].status.value == "cached"
