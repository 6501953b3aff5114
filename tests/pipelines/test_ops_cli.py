"""The stage registry and the ops CLI (status, lineage, argument errors) without Prefect or Ray."""

from __future__ import annotations

import pytest

from pipelines.__main__ import main
from pipelines.ops import open_part
from pipelines.shard_job import run_shard_job
from pipelines.stages import StageNotAvailable, get_stage, registry
from tests.pipelines.fake_stage import CONFIG_YAML

FAKE = "tests.pipelines.fake_stage:STAGE"
DOWN = "tests.pipelines.fake_stage:DOWN"


@pytest.fixture
def built(tmp_path, fake_dataset):
    """A store holding fake + fake_down shards 0 and 1 (shard 2 planned but never run), plus a run record."""
    from fourm_core import ArtifactStore
    from fourm_core.config import load_dataset_config

    root = str(tmp_path / "store")
    cfg = load_dataset_config(fake_dataset).model_dump(mode="json")
    units = []
    for shard in (0, 1):
        units += run_shard_job(FAKE, cfg, root, None, shard, False, "run-123")
        units += run_shard_job(DOWN, cfg, root, None, shard, False, "run-123")
    ArtifactStore(root).write_run_record("fk", "20260101T000000-run", {
        "flow_run_id": "run-123", "stages": ["fake", "fake_down"], "plan": {"fake": [0, 1, 2], "fake_down": [0, 1]},
        "stage_artifacts": {"fake": ["numbers"], "fake_down": ["doubled"]}, "units": units})
    return root


def test_registry_knows_the_pipeline_stages_and_env_extras():
    reg = registry()
    assert reg["ingest"] == "ingest_stage.stage:STAGE" and {"pseudolabel", "tokenize"} <= set(reg)
    assert get_stage("fake").artifacts == ("numbers",)


def test_missing_or_unknown_stage_is_a_clear_error(monkeypatch):
    with pytest.raises(StageNotAvailable, match="unknown stage 'nope'"):
        get_stage("nope")
    monkeypatch.setenv("FOURM_EXTRA_STAGES", "ghost=no_such_package.stage:STAGE")
    with pytest.raises(StageNotAvailable, match="module 'no_such_package.stage' not found"):
        get_stage("ghost")
    monkeypatch.setenv("FOURM_EXTRA_STAGES", "fake=tests.pipelines.fake_stage:CONFIG_YAML")
    with pytest.raises(StageNotAvailable, match="not a fourm_core.stage.StageSpec"):
        get_stage("fake")


def test_status_table(built, fake_dataset, capsys):
    assert main(["status", fake_dataset, "--root", built]) == 0
    out = capsys.readouterr().out
    assert "latest run: flow run run-123" in out
    assert "fake       numbers   00000  done     4     1" in out
    assert "fake       numbers   00002  missing" in out
    assert "4 done, 0 cached, 0 failed, 1 missing" in out


def test_status_without_run_record_uses_manifests(built, capsys):
    import os
    import shutil

    shutil.rmtree(os.path.join(built, "fk", "_runs"))
    assert main(["status", "fk", "--root", built]) == 0
    out = capsys.readouterr().out
    assert "fake_down  doubled   00001  done" in out and "4 done, 0 cached, 0 failed, 0 missing" in out
    assert main(["status", "nothing-here", "--root", built]) == 1


def test_lineage_from_any_path_form(built, capsys):
    for part in (f"{built}/fk/doubled/shard-00001.parquet", f"{built}/fk/doubled/shard-00001.manifest.json"):
        assert main(["lineage", part]) == 0
        out = capsys.readouterr().out
        assert out.startswith("fk/doubled shard 1") and "fk/numbers shard 1" in out and "flow run run-123" in out
    assert main(["lineage", "fk/numbers/shard-00000", "--root", built]) == 0
    assert "config:     {\"n\": 12, \"shard_size\": 4}" in capsys.readouterr().out
    store, m = open_part(f"{built}/fk/numbers/shard-00000.parquet", None, None)
    assert store.root == built and m.shard == 0


def test_operator_errors_are_messages_not_tracebacks(built, tmp_path, capsys):
    assert main(["lineage", f"{built}/fk/numbers/shard-00009.parquet"]) == 2
    assert "not a committed artifact part" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIG_YAML.format(name="Bad Name"))
    assert main(["run", "--dataset", str(bad), "--root", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "field 'name'" in err and "Bad Name" in err
    assert main(["run", "--dataset", "nope-preset"]) == 2
    assert "presets: 4m21-official, c4, cc12m, coyo700m, demo" in capsys.readouterr().err


def test_worker_and_ops_modules_do_not_import_prefect_or_ray():
    """Ray workers import shard_job; status/lineage must stay fast: neither may pull in Prefect (1-4 s)."""
    import subprocess
    import sys

    code = ("import sys, pipelines.shard_job, pipelines.ops, pipelines.stages, pipelines.__main__; "
            "print(sorted(m for m in ('prefect', 'ray', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
