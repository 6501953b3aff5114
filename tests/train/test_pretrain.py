"""``pretrain`` with the demo preset: falling loss, a checkpoint whose lineage is the token shards, a cached
second call, resume only from a checkpoint with the same key, and a clear error for missing token shards.

Synthetic token shards go under dataset ``synth`` (``demo`` is the real demo's, made by the build flow).
"""

from __future__ import annotations

import numpy as np
import pytest

from fourm_core import ArtifactStore
from fourm_core.modalities import get_modality
from train_stage.data import MissingTokenShardsError, fit_grid
from train_stage.pretrain import demo_config, run_pretrain
from train_stage.config import load_train_config
from train_stage.synthetic import make_token_shards

DEMO_MODS = list(load_train_config("demo").model.modalities)  # what pretrain/demo trains on


def synth_cfg(**over):
    base = {"datasets": [{"name": "synth", "weight": 1.0}], "steps": 30, "checkpoint_every": 0, "blr": 0.2,
            "warmup_tokens": 1000, "log_every": 5}
    base.update(over)
    return demo_config(overrides=base)


@pytest.fixture
def synth_store(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    make_token_shards(store, "synth", DEMO_MODS, n_shards=2, shard_size=16)
    return store


def test_demo_preset_trains_on_token_shards_with_lineage_and_is_cached(synth_store, tmp_path, capsys):
    assert demo_config().model.modalities == DEMO_MODS and demo_config().datasets[0].name == "demo"
    cfg = synth_cfg(**{"model.overrides": {"dim": 32, "num_heads": 2}})  # the demo's modalities, half the width
    res = run_pretrain(synth_store, cfg, log_dir=tmp_path / "logs")
    assert not res.cached and res.resumed_from == 0
    losses = [r["loss"] for r in res.history]
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert last < first - 1.5, (first, last)
    assert set(res.history[-1]["modality_loss"]) == set(DEMO_MODS)  # every modality is trained
    m = res.manifest
    assert m.dataset == "training" and m.artifact == "checkpoints/demo/step-00000030"
    inputs = {(i.dataset, i.artifact, i.shard): i.digest for i in m.ingredients.inputs}
    expected = {("synth", get_modality(mod).token_artifact, s) for mod in DEMO_MODS for s in (0, 1)}
    assert set(inputs) == expected
    for (d, a, s), digest in inputs.items():
        assert synth_store.read_manifest(d, a, s).digest == digest
    assert (tmp_path / "logs" / "loss.png").stat().st_size > 0

    # lineage through the ops CLI, from the checkpoint's manifest path
    from pipelines.__main__ import main

    capsys.readouterr()
    assert main(["lineage", synth_store.manifest_path("training", m.artifact, None)]) == 0
    out = capsys.readouterr().out
    assert "checkpoints/demo/step-00000030" in out and "tokens/tok_semseg-224" in out and "tokens/caption" in out

    again = run_pretrain(synth_store, cfg, log_dir=tmp_path / "logs2")
    assert again.cached and again.manifest.digest == m.digest and again.manifest.timings == m.timings
    assert [r["loss"] for r in again.history] == losses  # the committed history, re-plotted for the new log dir
    assert (tmp_path / "logs2" / "loss.png").exists()


def test_resumes_only_a_checkpoint_with_the_same_cache_key(synth_store):
    # a small-vocabulary model: checkpoints are written four times here
    cfg = synth_cfg(steps=4, checkpoint_every=2, **{"model.modalities": ["tok_semseg@224", "tok_depth@224"],
                                                    "model.overrides": {"dim": 32, "num_heads": 2}})
    run_pretrain(synth_store, cfg)
    # a crash after step 2: the final checkpoint is gone, the step-2 one (same key) is resumed
    synth_store.remove(synth_store.manifest_path("training", "checkpoints/demo/step-00000004", None))
    assert run_pretrain(synth_store, cfg).resumed_from == 2
    # new token shards (another seed): the old checkpoints are not this run's; train from scratch
    make_token_shards(synth_store, "synth", DEMO_MODS, n_shards=2, shard_size=16, seed=1)
    res = run_pretrain(synth_store, cfg)
    assert not res.cached and res.resumed_from == 0 and res.history[0]["step"] == 1


def test_missing_token_artifacts_are_named_with_the_command(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    make_token_shards(store, "synth", ["caption", "tok_depth@224"], n_shards=1, shard_size=4)
    with pytest.raises(MissingTokenShardsError) as err:
        run_pretrain(store, synth_cfg())
    msg = str(err.value)
    assert "tokens/tok_normal-224" in msg and "tokens/tok_canny_edge-224" in msg and "tokens/caption (" not in msg
    assert "python -m pipelines run --dataset synth" in msg and "tokens/tok_depth-224" in msg  # what it has
    with pytest.raises(ValueError, match="demo"):
        make_token_shards(store, "demo", ["caption"])


def test_coarse_token_grids_are_resampled_to_the_modality_grid():
    grid = np.arange(16, dtype=np.int16)
    out = fit_grid(grid, "tok_depth@224").reshape(14, 14)
    assert out.shape == (14, 14) and out[0, 0] == 0 and out[0, 13] == 3 and out[13, 0] == 12 and out[13, 13] == 15
    assert set(np.unique(out)) == set(range(16))
    full = np.arange(196)
    assert fit_grid(full, "tok_depth@224") is full
    assert len(fit_grid(np.arange(4), "tok_dinov2_global")) == 16
    with pytest.raises(ValueError, match="square"):
        fit_grid(np.arange(10), "tok_depth@224")


def test_train_cli_refuses_synthetic_demo(tmp_path):
    from train_stage.__main__ import main

    with pytest.raises(SystemExit):
        main(["synthetic", "--store", str(tmp_path), "--dataset", "demo", "--modalities", "caption"])
    main(["synthetic", "--store", str(tmp_path), "--modalities", "caption", "--shards", "1"])
    assert ArtifactStore(str(tmp_path)).committed_shards("synthetic", "tokens/caption") == [0]


def test_editing_a_masking_mixture_changes_the_checkpoint_key(tmp_path):
    """The mixture is named by path or preset; its content, not its name, decides what a checkpoint learnt."""
    import yaml

    from train_stage.mixture import PRESETS
    from train_stage.trainer import train_ingredients

    mixture = tmp_path / "mix.yaml"
    content = yaml.safe_load((PRESETS / "masking" / "demo.yaml").read_text())
    mixture.write_text(yaml.safe_dump(content))
    cfg = synth_cfg(mixture=str(mixture))
    before = train_ingredients(cfg, []).cache_key()
    assert train_ingredients(cfg, []).cache_key() == before  # deterministic
    content["components"][0]["weight"] = content["components"][0].get("weight", 1) + 1
    mixture.write_text(yaml.safe_dump(content))
    assert train_ingredients(cfg, []).cache_key() != before
