"""Bad input and faults: every bad URL lands in the errors table with its reason, every good one in the shard."""

from __future__ import annotations

import io
import socket

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fourm_core import ArtifactStore
from ingest_stage import run_shard
from ingest_stage.samples import REASONS, url_key

from .conftest import FAST_DOWNLOAD


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now: connections are refused
    return port


def fault_list(server, tag: str) -> list[tuple[str, str | None]]:
    """(url, expected reason or None for success). ``tag`` makes the flaky URL unique per test."""
    u = server.url
    return [
        (u("/ok.jpg"), None),
        (u("/ok.png"), None),
        (u("/ok.webp"), None),
        (u("/wrong-type.png"), None),
        (u("/cmyk.jpg"), None),
        (u("/gray16.png"), None),
        (u("/rgba.png"), None),
        (u("/palette.png"), None),
        (u("/exif.jpg"), None),
        (u(f"/flaky.jpg?t={tag}"), None),
        (u("/redirect-once"), None),
        (u("/chain/3"), None),  # 3 redirects: within the cap
        (u("/chain/5"), "too_many_redirects"),
        (u("/ratelimited"), "http_429"),
        (u("/drip.jpg"), "timeout"),  # every read is fast, the whole body is not
        (u("/huge-stream.jpg"), "too_large"),
        (u("/missing.jpg"), "http_404"),
        (u("/gone"), "http_410"),
        (u("/always500"), "http_5xx"),
        (u("/slow.jpg"), "timeout"),
        (u("/truncated.jpg"), "decode_error"),
        (u("/bad-gzip.jpg"), "decode_error"),  # a broken Content-Encoding
        (u("/html.jpg"), "not_image"),
        (u("/empty.jpg"), "empty_body"),
        (u("/loop-a"), "redirect_loop"),
        (u("/bomb.png"), "bomb"),
        (u("/huge.jpg"), "too_large"),
        (u("/to-file"), "bad_scheme"),
        ("file:///etc/passwd", "bad_scheme"),
        ("ftp://127.0.0.1/x.jpg", "bad_scheme"),
        ("http://", "bad_url"),
        (f"http://127.0.0.1:{_closed_port()}/x.jpg", "connection_error"),
        (u("/ok.jpg"), "duplicate_url"),
        (u("/ok-copy.jpg"), "duplicate_content"),
    ]


def _write_tsv(path, rows) -> None:
    path.write_text("".join(f"{url}\tcaption {i}\n" for i, (url, _) in enumerate(rows)))


def _check_shard(store: ArtifactStore, name: str, rows: list[tuple[str, str | None]]) -> None:
    images = store.read_table(name, "images", 0).to_pylist()
    errors = store.read_errors(name, "images", 0).to_pylist()
    got_errors = {(e["sample_key"], e["reason"]) for e in errors}
    for url, reason in rows:
        if reason is not None:
            assert (url_key(url), reason) in got_errors, f"{url}: expected {reason}, errors: {errors}"
    good = [url for url, reason in rows if reason is None]
    by_url = {r["url"]: r for r in images}
    assert sorted(by_url) == sorted(good)
    assert len(images) == len(good)  # nothing twice
    assert len(errors) == len(rows) - len(good)
    assert all(e["reason"] in REASONS or e["reason"].startswith("http_") for e in errors)
    for r in images:
        im = Image.open(io.BytesIO(r["image"]))
        assert im.mode == "RGB" and im.size == (r["width"], r["height"])
        assert min(r["width"], r["height"]) == 64
        assert r["caption"].startswith("caption ")
    m = store.read_manifest(name, "images", 0)
    assert m.stats["ok"] == len(good) and m.stats["samples"] == len(rows)
    assert m.errors.count == len(rows) - len(good)
    assert sum(m.errors.by_reason.values()) == m.errors.count
    assert m.stats["retries"] >= 1  # the flaky URL needed one


def test_url_tsv_faults(http_server, make_config, store, tmp_path):
    rows = fault_list(http_server, "tsv")
    tsv = tmp_path / "list.tsv"
    _write_tsv(tsv, rows)
    cfg = make_config([{"kind": "url_tsv", "path": str(tsv)}], shard_size=100, shorter_side=64,
                      download=FAST_DOWNLOAD)
    [result] = run_shard(store, cfg, 0)
    assert result.status.value == "done"
    _check_shard(store, "t", rows)
    # the downloader hung up on the dripping server at its deadline instead of reading the 5 s body
    assert http_server.routes.drips_completed == 0

    # the conversions really happened (not only "it decoded")
    images = {r["url"]: r for r in store.read_table("t", "images", 0).to_pylist()}
    px = lambda path: np.asarray(Image.open(io.BytesIO(images[http_server.url(path)]["image"])))  # noqa: E731
    red = px("/cmyk.jpg").reshape(-1, 3).mean(axis=0)
    assert red[0] > 200 and red[1] < 60 and red[2] < 60, red  # CMYK red stays red
    ramp = px("/gray16.png")[:, :, 0].mean(axis=0)
    assert ramp[0] < 30 and ramp[-1] > 225 and 90 < ramp[len(ramp) // 2] < 165  # 16-bit scaled, not clipped
    assert px("/rgba.png").min() >= 250  # transparent pixels composited on white
    exif = images[http_server.url("/exif.jpg")]
    assert (exif["orig_width"], exif["orig_height"]) == (100, 200)  # EXIF orientation applied
    assert (exif["width"], exif["height"]) == (64, 128)
    assert (images[http_server.url("/ok.jpg")]["orig_width"], images[http_server.url("/ok.jpg")]["orig_height"]) == (160, 120)


def test_url_parquet_faults(http_server, make_config, store, tmp_path):
    rows = fault_list(http_server, "parquet")
    table = pa.table({"link": [u for u, _ in rows], "alt": [f"caption {i}" for i in range(len(rows))]})
    pq.write_table(table, tmp_path / "part-0.parquet", row_group_size=7)
    cfg = make_config([{"kind": "url_parquet", "path": str(tmp_path), "url_column": "link", "text_column": "alt"}],
                      shard_size=100, shorter_side=64, download=FAST_DOWNLOAD)
    run_shard(store, cfg, 0)
    _check_shard(store, "t", rows)


def test_parquet_missing_column_names_the_fix(make_config, store, tmp_path):
    pq.write_table(pa.table({"URL": ["http://x/a.jpg"]}), tmp_path / "p.parquet")
    cfg = make_config([{"kind": "url_parquet", "path": str(tmp_path / "p.parquet")}])
    with pytest.raises(ValueError, match="no column 'url'.*url_column"):
        run_shard(store, cfg, 0)


def test_retry_then_success_and_backoff(http_server):
    from fourm_core.config import DownloadConfig
    from ingest_stage.download import Downloader

    sleeps: list[float] = []
    cfg = DownloadConfig(**{**FAST_DOWNLOAD, "retries": 3, "backoff_s": 0.5})
    with Downloader(cfg, sleep=sleeps.append) as dl:
        got = dl.fetch(http_server.url("/flaky.jpg?t=backoff"))
        assert got.attempts == 2 and sleeps == [0.5]
        sleeps.clear()
        with pytest.raises(Exception) as err:
            dl.fetch(http_server.url("/always500?t=backoff"))
        assert err.value.reason == "http_5xx"
        assert sleeps == [0.5, 1.0, 2.0]  # exponential backoff, bounded by `retries`
        assert http_server.routes.hits["/always500?t=backoff"] == 4
        sleeps.clear()
        with pytest.raises(Exception) as err:
            dl.fetch(http_server.url("/missing.jpg?t=backoff"))
        assert err.value.reason == "http_404" and sleeps == []  # 4xx is final: no retry


def test_connections_are_kept_alive(http_server):
    """A body read to the end hands its connection back for the next URL (a TCP connect per image would cost
    CPU and latency); a body refused unread (too large) drops its connection, and the next URL gets a new one."""
    from fourm_core.config import DownloadConfig
    from ingest_stage.download import Downloader

    routes = http_server.routes
    with Downloader(DownloadConfig(**{**FAST_DOWNLOAD, "concurrency": 1})) as dl:
        start = len(routes.peers)
        for i in range(5):
            dl.fetch(http_server.url(f"/ok.jpg?t=keepalive{i}"))
        assert len(set(routes.peers[start:])) == 1
        with pytest.raises(Exception) as err:
            dl.fetch(http_server.url("/huge.jpg?t=keepalive"))  # Content-Length over the cap: never read
        assert err.value.reason == "too_large"
        assert dl.fetch(http_server.url("/ok.jpg?t=keepalive-after")).attempts == 1
        assert len(set(routes.peers[start:])) == 2
