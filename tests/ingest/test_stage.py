"""The stage contract: shard plan, caching, recompute on change, the CLI, and the demo preset."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from fourm_core import ArtifactStore, load_dataset_config
from fourm_core.stage import StageSpec
from ingest_stage import STAGE, artifacts_for, plan_shards, run_shard
from ingest_stage.__main__ import main
from ingest_stage.plan import build_plan
from ingest_stage.samples import url_key

from .conftest import LOOPBACK


def _photos_and_scenes(make_config, **ingest):
    return make_config([{"kind": "synthetic", "n_samples": 5, "size": 96}, {"kind": "skimage_photos"}],
                       **{"shard_size": 4, "shorter_side": 48, **ingest})


def test_stage_spec_and_plan(make_config, store):
    assert isinstance(STAGE, StageSpec) and STAGE.name == "ingest"
    assert set(STAGE.artifacts) == {"images", "ground_truth", "texts"}
    cfg = _photos_and_scenes(make_config)
    assert plan_shards(store, cfg) == [0, 1, 2, 3]  # 5 scenes + 8 photos in shards of 4
    assert artifacts_for(cfg) == ["images", "ground_truth"]
    plan = build_plan(cfg)
    keys = [[r.key for _, _, r in plan.items(s)] for s in range(4)]
    assert keys[1] == ["synthetic-s0-000004", "skimage-astronaut", "skimage-chelsea", "skimage-coffee"]
    assert [[r.key for _, _, r in build_plan(cfg).items(s)] for s in range(4)] == keys  # stable across runs
    with pytest.raises(ValueError, match="shards 0..3"):
        run_shard(store, cfg, 4)


def test_cached_rerun_and_recompute_on_change(make_config, store):
    cfg = _photos_and_scenes(make_config)
    first = run_shard(store, cfg, 1)[0]
    assert first.status.value == "done" and [m.artifact for m in first.manifests] == ["images", "ground_truth"]
    again = run_shard(store, cfg, 1)[0]
    assert again.status.value == "cached" and again.manifests[0].digest == first.manifests[0].digest
    # concurrency cannot change a shard's content: still cached
    assert run_shard(store, _photos_and_scenes(make_config, download={"concurrency": 3}), 1)[0].status.value == "cached"
    # a field that changes the output recomputes
    bigger = _photos_and_scenes(make_config, shorter_side=40)
    redone = run_shard(store, bigger, 1)[0]
    assert redone.status.value == "done" and redone.manifests[0].cache_key != first.manifests[0].cache_key
    rows = store.read_table("t", "images", 1).to_pylist()
    assert {min(r["width"], r["height"]) for r in rows} == {40}
    astronaut = next(r for r in rows if r["sample_key"] == "skimage-astronaut")
    assert (astronaut["orig_width"], astronaut["orig_height"]) == (512, 512)
    assert "astronaut" in astronaut["caption"]
    assert run_shard(store, bigger, 1, force=True)[0].status.value == "done"
    # other shards were never touched
    assert store.committed_shards("t", "images") == [1]


def test_url_list_edit_recomputes_only_its_shard(http_server, make_config, store, tmp_path):
    urls = [http_server.url(p) for p in ("/ok.jpg", "/ok.png", "/ok.webp", "/palette.png")]
    tsv = tmp_path / "l.tsv"
    tsv.write_text("".join(f"{u}\tc{i}\n" for i, u in enumerate(urls)))
    cfg = make_config([{"kind": "url_tsv", "path": str(tsv)}], shard_size=2, shorter_side=32, download=LOOPBACK)
    assert [run_shard(store, cfg, s)[0].status.value for s in (0, 1)] == ["done", "done"]
    tsv.write_text("".join(f"{u}\tc{i}{' edited' if i == 3 else ''}\n" for i, u in enumerate(urls)))
    cfg = make_config([{"kind": "url_tsv", "path": str(tsv)}], shard_size=2, shorter_side=32, download=LOOPBACK)
    assert [run_shard(store, cfg, s)[0].status.value for s in (0, 1)] == ["cached", "done"]
    assert store.read_table("t", "images", 1).column("caption").to_pylist() == ["c2", "c3 edited"]
    assert store.read_table("t", "images", 0).column("sample_key").to_pylist() == [url_key(u) for u in urls[:2]]


def test_cli_runs_shards_and_summarises_reasons(http_server, tmp_path, capsys):
    tsv = tmp_path / "l.tsv"
    tsv.write_text(f"url\tcaption\n{http_server.url('/ok.jpg')}\ta\n{http_server.url('/missing.jpg')}\tb\n"
                   f"{http_server.url('/html.jpg')}\tc\nfile:///etc/passwd\td\n")
    cfg = tmp_path / "cli.yaml"
    cfg.write_text(f"name: cli\nsources: [{{kind: url_tsv, path: {tsv}}}]\n"
                   "ingest: {download: {allow_networks: [127.0.0.0/8]}}\n")
    root = str(tmp_path / "store")
    assert main(["--dataset", str(cfg), "--root", root, "--set", "ingest.shorter_side=32", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "4 samples in 1 shards" in out  # the header line of the TSV is not a sample
    assert "1 samples ok, 3 failed" in out
    for reason in ("http_404", "not_image", "bad_scheme"):
        assert f"{reason}" in out
    assert main(["--dataset", str(cfg), "--root", root, "--set", "ingest.shorter_side=32", "--shard", "0",
                 "--no-progress"]) == 0
    assert "1 cached" in capsys.readouterr().out
    assert main(["--dataset", str(cfg), "--root", root, "--shard", "3", "--no-progress"]) == 2
    assert "no shard [3]" in capsys.readouterr().err
    assert main(["--dataset", str(cfg), "--root", root, "--set", "ingest.shard_size=0", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "ingest.shard_size" in err and str(cfg) in err


def test_demo_preset_has_no_network_sources(tmp_path):
    cfg = load_dataset_config("demo")
    store = ArtifactStore(str(tmp_path / "store"))
    shards = plan_shards(store, cfg)
    assert len(shards) == 5  # 64 scenes in 4 shards of 16, then scikit-image's 8 photos
    result = run_shard(store, cfg, 4)[0]
    rows = store.read_table("demo", "images", 4).to_pylist()
    assert result.status.value == "done" and len(rows) == 8 and store.read_errors("demo", "images", 4).num_rows == 0
    assert all(Image.open(io.BytesIO(r["image"])).mode == "RGB" for r in rows)
    assert all(r["caption"] for r in rows)


def test_duplicate_urls_across_shards_are_fetched_once(http_server, make_config, store, tmp_path):
    a, b = http_server.url("/ok.jpg?x=dedupe"), http_server.url("/ok.png?x=dedupe")
    tsv = tmp_path / "dups.tsv"
    tsv.write_text(f"{a}\tfirst\n{b}\tsecond\n{a}\tagain in shard 1\n{a} \tand with a trailing space\n")
    cfg = make_config([{"kind": "url_tsv", "path": str(tsv)}], shard_size=2, shorter_side=32, download=LOOPBACK)
    for s in (0, 1):
        run_shard(store, cfg, s)
    assert store.read_table("t", "images", 1).num_rows == 0
    errors = store.read_errors("t", "images", 1).to_pylist()
    assert [(e["sample_key"], e["reason"]) for e in errors] == [(url_key(a), "duplicate_url")] * 2
    assert "shard 0" in errors[0]["detail"]
    assert http_server.routes.hits["/ok.jpg?x=dedupe"] == 1  # never fetched again
    # with dedupe off, every listed sample is processed again
    nodedupe = make_config([{"kind": "url_tsv", "path": str(tsv)}], shard_size=2, shorter_side=32, dedupe=False,
                           download=LOOPBACK)
    run_shard(store, nodedupe, 1)
    assert store.read_table("t", "images", 1).num_rows == 1  # the in-shard repeat is still one key
    assert store.read_errors("t", "images", 1).column("reason").to_pylist() == ["duplicate_key"]


def test_orchestrator_sees_cached_shards_without_running_them(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    cfg = load_dataset_config("demo", overrides={"sources": [{"kind": "synthetic", "n_samples": 4, "size": 64}],
                                                 "ingest.shard_size": 2})
    assert STAGE.dataset_artifacts(cfg) == ("images", "ground_truth")
    assert not STAGE.shard_is_cached(store, cfg, 0)
    STAGE.run_shard(store, cfg, 0)
    assert STAGE.shard_is_cached(store, cfg, 0) and not STAGE.shard_is_cached(store, cfg, 1)
