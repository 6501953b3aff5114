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


def _cli(config: Path, root: str, shards: tuple[str, ...] = ("--shard", "0")) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "ingest_stage", "--dataset", str(config), "--root", root,
                             *shards, "--no-progress"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_sigkill_mid_shard_then_rerun(http_server, tmp_path):
    urls = [http_server.url(f"/slowok/{i}.jpg") for i in range(N)]
    tsv = tmp_path / "list.tsv"
    tsv.write_text("".join(f"{u}\tslow image {i}\n" for i, u in enumerate(urls)))
    config = tmp_path / "killme.yaml"
    config.write_text(yaml.safe_dump({
        "name": "killme", "sources": [{"kind": "url_tsv", "path": str(tsv)}],
        "ingest": {"shard_size": 100, "shorter_side": 32, "download": {"concurrency": 2, "timeout_s": 5,
                                                                 "allow_networks": ["127.0.0.0/8"]}},
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


@pytest.mark.slow
def test_repeated_kills_at_any_point_never_expose_a_partial_shard(tmp_path):
    """Kill while shards are being committed (data files, manifests of a two-artifact unit): every shard a
    reader can see is complete and matches its digest; the final run has every sample exactly once."""
    n, per = 60, 2  # 50 small shards: commits happen all the time, so kills land in and between them
    config = tmp_path / "scenes.yaml"
    config.write_text(yaml.safe_dump({
        "name": "scenes", "sources": [{"kind": "synthetic", "n_samples": n, "size": 64, "seed": 3}],
        "ingest": {"shard_size": per, "shorter_side": 64, "image_format": "png"},
    }))
    root = str(tmp_path / "store")
    store = ArtifactStore(root)
    art_dir = Path(root) / "scenes" / "images"

    def manifests() -> int:
        return len(list(art_dir.glob("*.manifest.json"))) if art_dir.exists() else 0

    for _ in range(3):
        kill_after = manifests() + 2  # two more shards committed in this run, then kill
        proc = _cli(config, root, ())
        deadline = time.monotonic() + 60
        while manifests() < kill_after and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert proc.poll() is None, f"the run finished before it could be killed ({manifests()} manifests): {proc.stdout.read()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        for artifact in ("images", "ground_truth"):
            for shard in store.committed_shards("scenes", artifact):
                table = store.read_table("scenes", artifact, shard, verify=True)  # bytes match the manifest
                assert table.num_rows == per
        # a re-run only redoes what is missing: shards committed so far are cached
    final = _cli(config, root, ())
    out, _ = final.communicate(timeout=180)
    assert final.returncode == 0, out
    keys = []
    for shard in range(n // per):
        images = store.read_table("scenes", "images", shard, verify=True)
        gt = store.read_table("scenes", "ground_truth", shard, verify=True)
        assert images.column("sample_key").to_pylist() == gt.column("sample_key").to_pylist()
        keys += images.column("sample_key").to_pylist()
    assert sorted(keys) == [f"synthetic-s3-{i:06d}" for i in range(n)]  # every sample exactly once
    assert "cached" in out  # the shards committed before the kills were not redone
