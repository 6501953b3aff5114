"""The shipped cc12m, coyo700m and c4 presets at tiny size: their filters, kept columns and dedup settings."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from fourm_core import load_dataset_config
from ingest_stage import run_shard as ingest
from ingest_stage.dedup import run_shard as dedup
from ingest_stage.samples import url_key

from . import media
from .test_curation import GOOD

TINY = {"ingest.shard_size": 16, "ingest.shorter_side": 32, "ingest.download.allow_networks": ["127.0.0.0/8"],
        "ingest.download.timeout_s": 5}


def _reasons(store, name, artifact="images"):
    return {e["sample_key"]: e["reason"] for e in store.read_errors(name, artifact, 0).to_pylist()}


def test_cc12m_then_coyo700m_presets(http_server, store, tmp_path, monkeypatch):
    r = http_server.routes
    r.add("/p/big.jpg", media.jpeg(240, 200, seed=81))
    r.add("/p/big2.jpg", media.jpeg(300, 220, seed=82))
    r.add("/p/big-again.jpg", media.jpeg(240, 200, seed=81))  # the CC12M image at another URL
    r.add("/p/small.jpg", media.jpeg(120, 90, seed=83))
    r.add("/p/banner.jpg", media.jpeg(900, 200, seed=84))
    u = http_server.url
    tsv = tmp_path / "cc12m.tsv"
    tsv.write_text(f"{u('/p/big.jpg')}\ta <b>photo</b>\n{u('/p/small.jpg')}\tsmall\n{u('/p/banner.jpg')}\tbanner\n"
                   f"{u('/p/big2.jpg')}\t\n")
    monkeypatch.setenv("CC12M_TSV", str(tsv))
    cc = load_dataset_config("cc12m", TINY)
    assert cc.stages[:2] == ["ingest", "dedup"]  # then labelling and tokenizing (the nightly run)
    ingest(store, cc, 0)
    [row] = store.read_table("cc12m", "images", 0).to_pylist()
    assert row["caption"] == "a photo"
    assert _reasons(store, "cc12m") == {url_key(u("/p/small.jpg")): "too_small",
                                        url_key(u("/p/banner.jpg")): "aspect_ratio",
                                        url_key(u("/p/big2.jpg")): "no_caption"}
    dedup(store, cc, 0)

    coyo_dir = tmp_path / "coyo"
    coyo_dir.mkdir()
    keep = load_dataset_config("coyo700m").sources[0].keep_columns
    n = 2
    data = {"url": [u("/p/big-again.jpg"), u("/p/big2.jpg")], "text": ["same image", "nsfw"]}
    data.update({c: [0.1] * n for c in keep})
    data["id"] = [7, 8]
    data["nsfw_score_opennsfw2"] = [0.01, 0.93]
    pq.write_table(pa.table(data), coyo_dir / "part-00000.parquet")
    monkeypatch.setenv("COYO_PARQUET", str(coyo_dir))
    coyo = load_dataset_config("coyo700m", TINY)
    ingest(store, coyo, 0)
    [row] = store.read_table("coyo700m", "images", 0).to_pylist()
    assert json.loads(row["meta"])["id"] == 7 and set(json.loads(row["meta"])) == set(keep)
    assert _reasons(store, "coyo700m") == {url_key(u("/p/big2.jpg")): "score_filter"}
    dedup(store, coyo, 0)
    [dup] = store.read_table("coyo700m", "dedup", 0).to_pylist()
    assert (dup["kind"], dup["duplicate_of_dataset"], dup["duplicate_of"]) == ("exact", "cc12m", url_key(u("/p/big.jpg")))


def test_c4_preset_quality_rules(store, tmp_path, monkeypatch):
    d = tmp_path / "c4"
    d.mkdir()
    (d / "c4-train.00000-of-01024.json").write_text(
        "\n".join(json.dumps({"text": t}) for t in [GOOD, "Click here to subscribe.", GOOD]) + "\n")
    monkeypatch.setenv("C4_JSONL", str(d))
    cfg = load_dataset_config("c4", {"ingest.shard_size": 8})
    ingest(store, cfg, 0)
    assert store.read_table("c4", "texts", 0).num_rows == 1
    assert sorted(_reasons(store, "c4", "texts").values()) == ["duplicate_content", "low_quality"]
    assert dedup(store, cfg, 0)[0].status.value == "done"
