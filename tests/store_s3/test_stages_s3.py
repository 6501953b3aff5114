"""The real ingest -> pseudolabel -> tokenize stages against an ``s3://`` root on the S3 test server
(SeaweedFS), driven the way the orchestrator drives them (``plan_job`` / ``run_shard_job``), then status,
verify and a fully-cached re-run through the index; and a SIGKILL of the ingest CLI in the middle of a
commit on S3 (between its journal marks): nothing half-visible, the index exact, the re-run heals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fourm_core import ArtifactStore
from fourm_core import index as ix
from fourm_core.config import load_dataset_config
from pipelines.__main__ import main
from pipelines.planning import split_cached
from pipelines.shard_job import plan_job, run_shard_job
from pipelines.stages import get_stage, registry

REPO = Path(__file__).resolve().parents[2]
STAGES = ["ingest", "pseudolabel", "tokenize"]


def _config(tmp_path: Path, n: int = 8, shard_size: int = 4) -> Path:
    path = tmp_path / "s3e.yaml"
    path.write_text(yaml.safe_dump({
        "name": "s3e", "sources": [{"kind": "synthetic", "n_samples": n, "size": 64, "seed": 5}],
        "ingest": {"shard_size": shard_size, "shorter_side": 64, "image_format": "png"},
        "stages": STAGES,
        "pseudolabel": {"runner": "local", "profile": "tiny", "labelers": ["canny", "color_palette"]},
        "tokenize": {"modalities": ["color_palette", "caption"]},
    }))
    return path


@pytest.mark.slow
def test_real_stages_on_s3_then_status_verify_and_cached_rerun(s3_root, tmp_path, capsys):
    root, options = s3_root
    config = _config(tmp_path)
    cfg = load_dataset_config(str(config)).model_dump(mode="json")
    for stage in STAGES:
        target = registry()[stage]
        shards = plan_job(target, cfg, root, options)
        assert shards == [0, 1], (stage, shards)
        for shard in shards:
            units = run_shard_job(target, cfg, root, options, shard, False, "run-s3")
            assert units and all(u["status"] == "done" for u in units), units
            assert all(uri.startswith(root + "/s3e/") for u in units for uri in u["uris"])

    store = ArtifactStore(root, options)
    m = store.read_manifest("s3e", "tokens/color_palette", 1)
    assert m.uri == f"{root}/s3e/tokens/color_palette/data/shard-00001.parquet" and m.flow_run_id == "run-s3"
    raw = json.loads(store.read_bytes(store.manifest_path("s3e", "tokens/color_palette", 1)))
    assert raw["uri"] == "s3e/tokens/color_palette/data/shard-00001.parquet"  # relative on S3 too
    assert store.read_table("s3e", "labels/canny_edge", 0, verify=True).num_rows == 4

    opts = json.dumps(options)
    assert main(["verify", str(config), "--root", root, "--storage-options", opts]) == 0
    assert "0 bad" in capsys.readouterr().out
    assert main(["lineage", f"{root}/s3e/tokens/color_palette/shard-00000.parquet", "--storage-options", opts]) == 0
    out = capsys.readouterr().out
    assert "s3e/labels/color_palette shard 0" in out and "s3e/images shard 0" in out and "MISSING" not in out

    # a fully-cached re-run: the orchestrator's check through the index, and the stages' own cached path
    dataset = load_dataset_config(str(config))
    for stage in STAGES:
        spec = get_stage(stage)
        view = ArtifactStore(root, options, use_index=True)
        cached, to_run = split_cached(view, spec, dataset, [0, 1], force=False)
        assert spec.shard_units is not None and to_run == [] and cached, stage  # nothing dispatched
        for shard in (0, 1):  # and a worker (reading manifests, no index) finds every unit cached too
            units = run_shard_job(registry()[stage], cfg, root, options, shard, False, "run-s3-2")
            assert {u["status"] for u in units} == {"cached"}, units


def _commit_in_flight(store: ArtifactStore, dataset: str, artifacts: list[str]) -> bool:
    """True when some artifact has an .open journal mark without its .done: a commit is in progress."""
    for artifact in artifacts:
        marks = ix._marks_after(store, dataset, artifact, 0)
        done = {nonce for _, _, nonce, kind in marks if kind == "done"}
        if any(kind == "open" and nonce not in done for _, _, nonce, kind in marks):
            return True
    return False


@pytest.mark.slow
def test_sigkill_of_ingest_mid_commit_on_s3(s3_root, tmp_path):
    root, options = s3_root
    config = _config(tmp_path, n=12, shard_size=2)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "AWS_ENDPOINT_URL": options["endpoint_url"],
           "AWS_ACCESS_KEY_ID": options["key"], "AWS_SECRET_ACCESS_KEY": options["secret"]}
    store = ArtifactStore(root, options)
    artifacts = ["images", "ground_truth"]
    landed = 0
    for attempt in range(4):
        proc = subprocess.Popen([sys.executable, "-m", "ingest_stage", "--dataset", str(config), "--root", root,
                                 "--force", "--no-progress"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline:
            if _commit_in_flight(store, "s3e", artifacts):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.wait(30)
        if proc.returncode == -signal.SIGKILL:
            landed += 1
        # whatever was in flight: every visible part is whole, and the index says exactly what manifests say
        for artifact in artifacts:
            truth = {s: store.read_manifest("s3e", artifact, s).cache_key
                     for s in store.committed_shards("s3e", artifact)}
            view = ArtifactStore(root, options, use_index=True)
            assert {s: view.read_manifest("s3e", artifact, s).cache_key
                    for s in view.committed_shards("s3e", artifact)} == truth, (attempt, artifact)
            for shard in truth:
                store.read_table("s3e", artifact, shard, verify=True)
        if landed >= 2:
            break
    assert landed >= 1, "no kill landed while a commit was in flight"
    healed = subprocess.run([sys.executable, "-m", "ingest_stage", "--dataset", str(config), "--root", root,
                             "--no-progress"], env=env, capture_output=True, text=True, timeout=300)
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert store.committed_shards("s3e", "images") == list(range(6))
    keys = [k for s in range(6) for k in store.read_table("s3e", "images", s, verify=True).column("sample_key").to_pylist()]
    assert len(keys) == len(set(keys)) == 12
