"""A real SIGKILL in the middle of a shard: nothing partial is visible, the re-run has every sample once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fourm_core import ArtifactStore, NotCommittedError
from ingest_stage.samples import url_key

REPO = Path(__file__).resolve().parents[2]
N = 16


def _cli(config: Path, root: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "ingest_stage", "--dataset", str(config), "--root", root,
                             "--shard", "0", "--no-progress"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_sigkill_mid_shard_then_rerun(http_server, tmp_path):
    urls = [http_server.url(f"/slowok/{i}.jpg") for i in range(N)]
    tsv = tmp_path / "list.tsv"
    tsv.write_text("".join(f"{u}\tslow image {i}\n" for i, u in enumerate(urls)))
    config = tmp_path / "killme.yaml"
    config.write_text(yaml.safe_dump({
        "name": "killme", "sources": [{"kind": "url_tsv", "path": str(tsv)}],
        "ingest": {"shard_size": 100, "shorter_side": 32, "download": {"concurrency": 2, "timeout_s": 5}},
    }))
    root = str(tmp_path / "store")
    routes = http_server.routes
    routes.delay_s = 0.3  # 16 images, 2 at a time: ~2.4 s of downloading, plenty of time to kill mid-shard
    try:
        start = routes.hits.total()
        slow_before = sum(n for p, n in routes.hits.items() if p.startswith("/slowok/"))
        proc = _cli(config, root)
        deadline = time.monotonic() + 60
        while sum(n for p, n in routes.hits.items() if p.startswith("/slowok/")) - slow_before < 4:
            assert proc.poll() is None, f"ingestion ended before the kill: {proc.stdout.read()}"
            assert time.monotonic() < deadline, "the server never saw the ingestion's requests"
            time.sleep(0.02)
        assert proc.poll() is None  # still in the middle of the shard
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        served_before_kill = routes.hits.total() - start
        assert served_before_kill < N + 2

        store = ArtifactStore(root)
        assert store.committed_shards("killme", "images") == []
        assert store.read_manifest("killme", "images", 0) is None
        with pytest.raises(NotCommittedError):
            store.read_table("killme", "images", 0)
        assert store.read_errors("killme", "images", 0) is None
    finally:
        routes.delay_s = 0.0

    rerun = _cli(config, root)
    out, _ = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, out
    store = ArtifactStore(root)
    assert store.committed_shards("killme", "images") == [0]
    keys = store.read_table("killme", "images", 0, columns=["sample_key"]).column("sample_key").to_pylist()
    assert sorted(keys) == sorted(url_key(u) for u in urls)  # every sample, each exactly once
    assert store.read_errors("killme", "images", 0).num_rows == 0
    assert "16 samples ok" in out

    # and a third run finds the shard committed: nothing is fetched again
    before = routes.hits.total()
    again = _cli(config, root)
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 0 and "1 cached" in out, out
    assert routes.hits.total() == before
