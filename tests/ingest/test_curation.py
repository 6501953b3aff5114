"""Curation: untrusted-URL guard, image geometry and score filters, caption cleaning, C4 quality rules."""

from __future__ import annotations

import io
import json
import socket

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fourm_core.config import DownloadConfig, IngestConfig
from ingest_stage import run_shard
from ingest_stage.download import Downloader, is_blocked
from ingest_stage.filters import clean_caption, quality_failure
from ingest_stage.imageproc import process_bytes
from ingest_stage.samples import SampleFailure, url_key

from . import media
from .conftest import FAST_DOWNLOAD, LOOPBACK

NO_ALLOW = {**FAST_DOWNLOAD, "allow_networks": [], "retries": 0}


@pytest.mark.parametrize("ip,blocked", [
    ("127.0.0.1", True), ("10.1.2.3", True), ("172.16.0.1", True), ("192.168.1.1", True),
    ("169.254.169.254", True), ("224.0.0.1", True), ("0.0.0.0", True), ("100.64.0.1", True), ("::1", True),
    ("fe80::1%eth0", True), ("::ffff:127.0.0.1", True), ("ff02::1", True), ("fc00::1", True),
    ("2002:7f00:1::1", True), ("2001:0:4136:e378:8000:63bf:80ff:fffe", True),  # 6to4 / Teredo of 127.0.0.1
    ("8.8.8.8", False), ("2001:4860:4860::8888", False),
])
def test_address_classes(ip, blocked):
    assert is_blocked(ip) is blocked


def test_loopback_is_refused_by_default_and_allowed_explicitly(http_server):
    url = http_server.url("/ok.jpg?t=ssrf")
    with Downloader(DownloadConfig(**NO_ALLOW)) as dl, pytest.raises(SampleFailure) as err:
        dl.fetch(url)
    assert err.value.reason == "blocked_address" and "allow_networks" in err.value.detail
    assert http_server.routes.hits["/ok.jpg?t=ssrf"] == 0  # refused before connecting
    with Downloader(DownloadConfig(**FAST_DOWNLOAD)) as dl:
        assert dl.fetch(url).data


def test_redirect_to_a_blocked_address_is_refused(http_server):
    port = http_server.httpd.server_address[1]
    http_server.routes.add("/to-internal", b"", status=302, ctype="text/plain",
                           Location=f"http://127.0.0.2:{port}/ok.jpg?t=internal")
    cfg = DownloadConfig(**{**NO_ALLOW, "allow_networks": ["127.0.0.1/32"]})  # only the first hop's address
    with Downloader(cfg) as dl, pytest.raises(SampleFailure) as err:
        dl.fetch(http_server.url("/to-internal"))
    assert err.value.reason == "blocked_address" and "127.0.0.2" in err.value.detail
    assert http_server.routes.hits["/ok.jpg?t=internal"] == 0


def test_dns_rebinding_connects_only_to_the_checked_address(http_server, monkeypatch):
    """The name answers a public address when checked and loopback afterwards: the downloader must connect to
    the address it checked (and fail), never resolve again and reach the loopback server."""
    real = socket.getaddrinfo
    answers = iter(["8.8.8.8"] + ["127.0.0.1"] * 10)
    port = http_server.httpd.server_address[1]

    def fake(host, *args, **kwargs):
        if host == "rebind.test":
            return real(next(answers), *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with Downloader(DownloadConfig(**{**NO_ALLOW, "timeout_s": 0.3})) as dl, pytest.raises(SampleFailure) as err:
        dl.fetch(f"http://rebind.test:{port}/ok.jpg?t=rebind")
    assert err.value.reason in ("connection_error", "timeout")
    assert http_server.routes.hits["/ok.jpg?t=rebind"] == 0


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(media.gradient(w, h, seed=5)).save(buf, "PNG")
    return buf.getvalue()


def test_extreme_aspect_ratio_is_cropped_or_refused_and_tiny_images_refused():
    long_ = _png(40, 2500)  # the shape of #13's 64x4000 banner
    out = process_bytes(long_, IngestConfig(shorter_side=32))
    assert (out.orig_width, out.orig_height) == (40, 2500) and out.cropped
    assert (out.width, out.height) == (32, 128)  # centre-cropped to 4:1, then resized
    with pytest.raises(SampleFailure) as err:
        process_bytes(long_, IngestConfig(shorter_side=32, filters={"aspect_action": "reject"}))
    assert err.value.reason == "aspect_ratio"
    assert not process_bytes(long_, IngestConfig(shorter_side=32, filters={"max_aspect_ratio": None})).cropped
    with pytest.raises(SampleFailure) as err:
        process_bytes(_png(8, 8), IngestConfig())  # was upscaled to 256x256
    assert err.value.reason == "too_small"


def test_scores_kept_in_meta_and_filtered_before_fetching(http_server, make_config, store, tmp_path):
    urls = [http_server.url(f"/ok.jpg?t=score{i}") for i in range(4)]
    pq.write_table(pa.table({
        "id": [11, 12, 13, 14], "url": urls, "text": ["a <i>cat</i> &amp; a dog", None, "c", "d"],
        "nsfw_score_opennsfw2": [0.01, 0.02, 0.9, 0.03], "aesthetic_score_laion_v2": [5.5, 4.8, 6.0, None],
        "watermark_score": [0.1, 0.2, 0.3, 0.4], "clip_similarity_vitb32": [0.31, 0.30, 0.29, 0.33],
    }), tmp_path / "coyo.parquet")
    keep = ["id", "nsfw_score_opennsfw2", "aesthetic_score_laion_v2", "watermark_score", "clip_similarity_vitb32"]
    cfg = make_config([{"kind": "url_parquet", "path": str(tmp_path / "coyo.parquet"), "keep_columns": keep}],
                      shard_size=10, shorter_side=32, dedupe=False, download=LOOPBACK,
                      filters={"max_scores": {"nsfw_score_opennsfw2": 0.5}, "min_scores": {"aesthetic_score_laion_v2": 4.5}})
    run_shard(store, cfg, 0)
    rows = {r["url"]: r for r in store.read_table("t", "images", 0).to_pylist()}
    assert sorted(rows) == sorted(urls[:2])
    assert json.loads(rows[urls[0]]["meta"]) == {"id": 11, "nsfw_score_opennsfw2": 0.01, "aesthetic_score_laion_v2": 5.5,
                                                 "watermark_score": 0.1, "clip_similarity_vitb32": 0.31}
    assert rows[urls[0]]["caption"] == "a cat & a dog"  # entities and tags cleaned
    errors = {e["sample_key"]: e for e in store.read_errors("t", "images", 0).to_pylist()}
    assert {k: e["reason"] for k, e in errors.items()} == {url_key(urls[2]): "score_filter", url_key(urls[3]): "score_filter"}
    assert "nsfw" in errors[url_key(urls[2])]["detail"] and "aesthetic" in errors[url_key(urls[3])]["detail"]
    assert http_server.routes.hits["/ok.jpg?t=score2"] == 0  # refused from the list, never fetched
    m = store.read_manifest("t", "images", 0)
    assert m.errors.by_reason == {"score_filter": 2} and m.stats["no_caption"] == 1


def test_score_filters_need_the_columns_kept(make_config, store, tmp_path):
    from fourm_core.config import ConfigError
    from ingest_stage import plan_shards

    pq.write_table(pa.table({"url": ["http://x/a.jpg"], "text": ["a"], "aesthetic": [5.0]}), tmp_path / "p.parquet")
    cfg = make_config([{"kind": "url_parquet", "path": str(tmp_path / "p.parquet")}],
                      filters={"min_scores": {"aesthetic": 4.5}})
    with pytest.raises(ConfigError, match="keep_columns"):
        plan_shards(store, cfg)


def test_caption_cleaning_and_required_captions(http_server, make_config, store, tmp_path):
    assert clean_caption("  Tom &amp;amp; Jerry <b>run</b>\t fast <!-- x -->  ") == "Tom & Jerry run fast"
    assert clean_caption("a < b and c > d") == "a < b and c > d"  # not a tag
    assert clean_caption(" <br/> ") is None and clean_caption(None) is None
    tsv = tmp_path / "l.tsv"
    tsv.write_text(f"{http_server.url('/ok.jpg?t=cap1')}\t<p>hello</p>\n{http_server.url('/ok.png?t=cap2')}\t  \n")
    cfg = make_config([{"kind": "url_tsv", "path": str(tsv)}], shard_size=10, shorter_side=32, download=LOOPBACK,
                      text={"require_caption": True})
    run_shard(store, cfg, 0)
    assert store.read_table("t", "images", 0).column("caption").to_pylist() == ["hello"]
    assert store.read_errors("t", "images", 0).column("reason").to_pylist() == ["no_caption"]


GOOD = ("The history of the town goes back to the twelfth century, when a small group of farmers settled near the "
        "river and built a mill. Over the following years the settlement grew into a market town with a church, a "
        "school and a bridge that connected it to the roads of the region. Today it is known for its old houses, "
        "its quiet streets and a museum that tells the story of the people who lived and worked there.")


def test_gopher_rules():
    from fourm_core.config import TextFilterConfig

    cfg = TextFilterConfig(quality=True)
    assert quality_failure(GOOD, cfg) is None
    assert quality_failure("too short to be a document", cfg).startswith("words")
    assert quality_failure("\n".join(["buy the cheap watches now and save"] * 20), cfg).startswith(("dup_line", "top_"))
    assert quality_failure(GOOD + " #tag" * 40, cfg).startswith("symbol_word_ratio")
    assert quality_failure(" ".join(["1234 5678"] * 40), cfg) is not None  # no alphabetic words / stop words


def test_language_rule():
    from fourm_core.config import TextFilterConfig

    german = ("Der schnelle braune Fuchs springt über den faulen Hund, und dann läuft er durch den Wald zu seinem "
              "Bau, wo die Familie schon auf ihn wartet. ") * 6
    english_only = TextFilterConfig(quality=True, languages=["en"])
    assert quality_failure(GOOD, english_only) is None
    assert quality_failure(german, english_only).startswith("language: de")
    # German allowed: it passes the language rule (and then meets Gopher's English stop-word rule)
    assert not quality_failure(german, TextFilterConfig(quality=True, languages=["en", "de"])).startswith("language")
    assert not quality_failure(german, TextFilterConfig(quality=True)).startswith("language")  # off by default


def test_c4_quality_filter_is_configurable_and_in_the_lineage(make_config, store, tmp_path):
    f = tmp_path / "c4-q.json"
    docs = [GOOD, "click here &amp; here", "\n".join(["buy the cheap watches now and save"] * 20),
            GOOD.replace("town", "<b>city</b>")]
    f.write_text("\n".join(json.dumps({"text": d}) for d in docs) + "\n")
    off = make_config([{"kind": "c4_jsonl", "path": str(f)}], shard_size=10)
    run_shard(store, off, 0)
    assert store.read_table("t", "texts", 0).num_rows == 4  # quality rules are off unless asked for
    on = make_config([{"kind": "c4_jsonl", "path": str(f)}], shard_size=10, text={"quality": True})
    run_shard(store, on, 0)
    texts = store.read_table("t", "texts", 0).column("caption").to_pylist()
    assert len(texts) == 2 and "<b>" not in texts[1] and "city" in texts[1]
    m = store.read_manifest("t", "texts", 0)
    assert m.errors.by_reason == {"low_quality": 2}
    assert m.ingredients.config["ingest"]["text"]["quality"] is True  # the settings are part of the lineage
    assert {e["detail"].split(":")[0] for e in store.read_errors("t", "texts", 0).to_pylist()} <= {
        "words", "dup_line_frac", "dup_line_char_frac", "top_2gram_char_frac", "top_3gram_char_frac"}
