"""Integrity: truncated or tampered parts are caught (cached check, reads, ``verify``), unreadable manifests
are reported with their path, and manifests name files relative to the store root (a copied store is
self-consistent). Fake stages, no Prefect, no Ray."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from fourm_core import ArtifactStore, UnitStatus
from fourm_core.config import load_dataset_config
from fourm_core.stage import units_of_run_shard
from fourm_core.store import CorruptPartError
from pipelines.__main__ import main
from pipelines.planning import split_cached
from pipelines.stages import get_stage
from tests.pipelines.fake_stage import run, run_down


@pytest.fixture
def built(tmp_path, fake_dataset):
    root = str(tmp_path / "store")
    store = ArtifactStore(root)
    cfg = load_dataset_config(fake_dataset)
    for shard in (0, 1, 2):
        run(store, cfg, shard)
        run_down(store, cfg, shard)
    return root, cfg


def _truncate(path: str, n: int = 500) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:n])


def test_truncated_shard_is_recomputed_and_named_when_read(built, fake_dataset, capsys):
    root, cfg = built
    store = ArtifactStore(root)
    numbers = store.data_path("fk", "numbers", 1)
    _truncate(numbers, 100)
    # the orchestrator's cached check (through the index: one listing of sizes) does not trust it
    view = ArtifactStore(root, use_index=True)
    spec = dataclasses.replace(get_stage("fake"), shard_units=units_of_run_shard(run))
    cached, to_run = split_cached(view, spec, cfg, [0, 1, 2], force=False)
    assert to_run == [1] and {s["shard"] for s in cached} == {0, 2}
    # a reader of the bad input is told which file is bad, and how to re-make it
    with pytest.raises(CorruptPartError, match=r"numbers/data/shard-00001\.parquet has 100 bytes.*rerun --dataset fk "
                                               r"--stage fake --shard 1"):
        store.read_table("fk", "numbers", 1)
    # verify reports it with the re-run command, and exits non-zero
    assert main(["verify", fake_dataset, "--root", root]) == 1
    out = capsys.readouterr().out
    assert "BAD fk/numbers shard 1" in out and "100 bytes, manifest records" in out
    assert f"re-run: python -m pipelines rerun --dataset {fake_dataset} --stage fake --shard 1" in out
    assert "prefect deployment run build-dataset/fk" in out and "6 part(s) verified, 1 bad" in out
    # the run recomputes it (the worker's cached check compares the size too)
    (result,) = run(store, cfg, 1)
    assert result.status is UnitStatus.DONE
    assert main(["verify", fake_dataset, "--root", root]) == 0


def test_tampered_manifest_and_same_size_data_are_caught_by_verify(built, fake_dataset, capsys):
    root, _ = built
    store = ArtifactStore(root)
    mpath = Path(store.manifest_path("fk", "doubled", 2))
    m = json.loads(mpath.read_text())
    m["rows"], m["digest"] = 999, "0" * 64
    mpath.write_text(json.dumps(m))
    data = Path(store.data_path("fk", "numbers", 0))
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size, other bytes
    data.write_bytes(bytes(raw))
    assert main(["verify", fake_dataset, "--root", root, "--stage", "fake_down"]) == 1
    out = capsys.readouterr().out
    assert "BAD fk/doubled shard 2" in out and "rows, manifest records 999" in out and "sha256 differs" in out
    assert "3 part(s) verified, 1 bad" in out  # --stage: only fake_down's parts
    assert main(["verify", fake_dataset, "--root", root, "--shard", "0"]) == 1
    out = capsys.readouterr().out
    assert "BAD fk/numbers shard 0" in out and "2 part(s) verified, 1 bad" in out


def test_unreadable_manifest_shows_with_its_path_and_the_rest_still_shows(built, fake_dataset, capsys):
    root, _ = built
    store = ArtifactStore(root)
    bad = store.manifest_path("fk", "numbers", 2)
    Path(bad).write_text("{ not json")
    assert main(["status", fake_dataset, "--root", root]) == 0
    out = capsys.readouterr().out
    assert "unreadable" in out and "numbers/shard-00002.manifest.json" in out
    assert out.count(" done ") + out.count(" cached ") >= 5  # every other unit still listed
    with pytest.raises(ValueError, match=r"unreadable manifest .*shard-00002\.manifest\.json"):
        store.read_manifest("fk", "numbers", 2)


def test_copied_store_is_self_consistent(built, tmp_path, fake_dataset, capsys):
    root, cfg = built
    copy = tmp_path / "moved"
    shutil.copytree(root, copy)
    shutil.rmtree(root)  # nothing may point into the original any more
    on_disk = json.loads((copy / "fk" / "doubled" / "shard-00001.manifest.json").read_text())
    assert on_disk["uri"] == "fk/doubled/data/shard-00001.parquet"
    assert on_disk["ingredients"]["inputs"][0]["uri"] == "fk/numbers/data/shard-00001.parquet"
    moved = ArtifactStore(str(copy))
    m = moved.read_manifest("fk", "doubled", 1)
    assert m.uri == str(copy / "fk" / "doubled" / "data" / "shard-00001.parquet")
    assert m.ingredients.inputs[0].uri == str(copy / "fk" / "numbers" / "data" / "shard-00001.parquet")
    assert main(["lineage", str(copy / "fk" / "doubled" / "data" / "shard-00001.parquet")]) == 0
    out = capsys.readouterr().out
    assert str(root) not in out and str(copy / "fk" / "numbers" / "data" / "shard-00001.parquet") in out
    assert "MISSING" not in out
    # and a re-run on the moved store finds everything cached
    assert [r.status for r in run_down(moved, cfg, 1)] == [UnitStatus.CACHED]


def test_manifest_with_absolute_uris_still_reads(built):
    """Manifests written before relative URIs (absolute paths into the store) read unchanged."""
    root, _ = built
    store = ArtifactStore(root)
    path = Path(store.manifest_path("fk", "numbers", 0))
    m = json.loads(path.read_text())
    m["uri"] = store.data_path("fk", "numbers", 0)
    path.write_text(json.dumps(m))
    assert store.read_manifest("fk", "numbers", 0).uri == store.data_path("fk", "numbers", 0)
    assert store.read_table("fk", "numbers", 0).num_rows == 4
