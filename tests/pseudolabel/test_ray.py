"""The stage on Ray Data: actor pools, per-sample errors, and a SIGKILLed actor mid-shard."""

import os
import signal
import threading
import time

from fourm_core.units import UnitStatus
from pseudolabel.stage import run_shard

from .conftest import PLUGIN, dataset_config


def test_ray_runner_matches_local_and_records_sample_errors(images_store, ray_session):
    settings = {"faulty": {"fail_keys": ["s00-001"]}}
    cfg = dataset_config(runner="ray", profile="tiny", labelers=["canny", "dinov2", "faulty"], plugins=[PLUGIN],
                         settings=settings)
    results = run_shard(images_store, cfg, 0)
    assert all(r.status is UnitStatus.DONE for r in results)
    keys = [f"s00-{i:03d}" for i in range(4)]
    assert images_store.read_table("demo", "labels/dinov2_features", 0).column("sample_key").to_pylist() == keys
    assert images_store.read_table("demo", "labels/faulty", 0).column("sample_key").to_pylist() == [
        k for k in keys if k != "s00-001"]
    assert [e["sample_key"] for e in images_store.read_errors("demo", "labels/faulty", 0).to_pylist()] == ["s00-001"]
    ray_tables = {a: images_store.read_table("demo", a, 0) for a in ("labels/canny_edge", "labels/dinov2_global")}
    local = dataset_config(runner="local", profile="tiny", labelers=["canny", "dinov2", "faulty"], plugins=[PLUGIN],
                           settings=settings)
    run_shard(images_store, local, 0, force=True)
    for a, t in ray_tables.items():
        assert images_store.read_table("demo", a, 0).equals(t)  # same bytes whichever runner made them


def test_sigkilled_actor_is_retried_and_the_shard_commits_once(images_store, ray_session, tmp_path):
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    cfg = dataset_config(runner="ray", labelers=["faulty"], plugins=[PLUGIN],
                         settings={"faulty": {"sleep_s": 1.0, "batch_size": 1, "pid_dir": str(pid_dir)}})
    box = {}

    def work():
        try:
            box["results"] = run_shard(images_store, cfg, 1)
        except Exception as exc:  # surfaced by the assertion below
            box["error"] = exc

    t = threading.Thread(target=work)
    t.start()
    deadline = time.time() + 120
    while not list(pid_dir.iterdir()) and time.time() < deadline:
        time.sleep(0.1)
    first = int(next(pid_dir.iterdir()).read_text())
    time.sleep(1.5)  # mid-shard: the actor is inside a batch
    os.kill(first, signal.SIGKILL)
    t.join(240)
    assert "error" not in box, box.get("error")
    assert [r.status for r in box["results"]] == [UnitStatus.DONE]
    table = images_store.read_table("demo", "labels/faulty", 1)
    keys = table.column("sample_key").to_pylist()
    assert keys == [f"s01-{i:03d}" for i in range(4)]  # complete, each sample exactly once
    pids = {int(p.read_text()) for p in pid_dir.iterdir()}
    assert first in pids and len(pids) >= 2  # a restarted actor finished the work
    assert set(table.column("pid").to_pylist()) - {first}  # rows made after the kill came from the new actor


def test_sigkilled_actor_with_two_shards_inside_commits_each_shard_once(images_store, ray_session, tmp_path):
    """The actor runs two calls at once (CALLS_IN_ACTOR): both shards' calls are in it when it is killed; Ray
    retries both on the restarted actor and each shard commits once, complete."""
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    cfg = dataset_config(runner="ray", labelers=["faulty"], plugins=[PLUGIN],
                         settings={"faulty": {"sleep_s": 0.5, "batch_size": 1, "pid_dir": str(pid_dir)}})
    box = {}

    def work(shard):
        try:
            box[shard] = run_shard(images_store, cfg, shard)
        except Exception as exc:  # surfaced by the assertion below
            box[f"error {shard}"] = exc

    threads = [threading.Thread(target=work, args=(s,)) for s in (0, 1)]
    for t in threads:
        t.start()
    deadline = time.time() + 120
    while not list(pid_dir.iterdir()) and time.time() < deadline:
        time.sleep(0.1)
    first = int(next(pid_dir.iterdir()).read_text())
    time.sleep(1.2)  # both calls are in the actor: one labelling, one waiting for the model
    os.kill(first, signal.SIGKILL)
    for t in threads:
        t.join(240)
    assert not [k for k in box if isinstance(k, str)], box
    for shard in (0, 1):
        assert [r.status for r in box[shard]] == [UnitStatus.DONE]
        keys = images_store.read_table("demo", "labels/faulty", shard).column("sample_key").to_pylist()
        assert keys == [f"s{shard:02d}-{i:03d}" for i in range(4)]  # complete, each sample exactly once
        assert images_store.read_errors("demo", "labels/faulty", shard).num_rows == 0
    assert len({int(p.read_text()) for p in pid_dir.iterdir()}) >= 2  # a restarted actor finished the work


def test_decoding_in_the_first_step_or_in_decode_tasks_labels_alike(images_store, ray_session, monkeypatch):
    """A model labeler first (its actor decodes) and a model-free one after; then the same with decode tasks."""
    import pseudolabel.ray_pass as ray_pass

    cfg = dataset_config(runner="ray", profile="tiny", labelers=["dinov2", "canny"])
    arts = ("labels/dinov2_global", "labels/canny_edge")
    made = {}
    for in_first_step in (True, False):
        monkeypatch.setattr(ray_pass, "DECODE_IN_FIRST_STEP", in_first_step)
        assert all(r.status is UnitStatus.DONE for r in run_shard(images_store, cfg, 0, force=True))
        made[in_first_step] = {a: images_store.read_table("demo", a, 0) for a in arts}
    for a in arts:
        assert made[True][a].num_rows == 4
        assert made[True][a].equals(made[False][a])


def test_pixels_are_decoded_in_the_first_step_unless_it_runs_on_a_gpu():
    from pseudolabel.ray_pass import decode_in_first_step

    assert decode_in_first_step(pixels=True, first_step_gpus=0.0)
    assert not decode_in_first_step(pixels=True, first_step_gpus=0.25)  # decode tasks keep the GPU fed
    assert decode_in_first_step(pixels=False, first_step_gpus=0.25)  # nothing to decode: never a decode task


def test_a_caption_only_pass_does_not_read_the_image_bytes(images_store):
    from pseudolabel.config import pseudolabel_config
    from pseudolabel.stage import _input_table, build_labelers

    cfg = pseudolabel_config(dataset_config(runner="local", profile="tiny", labelers=["t5", "dinov2"]))
    labs = {lab.name: lab for lab in build_labelers(cfg, 0)}
    by_label = {o: lab for lab in labs.values() for o in lab.outputs}
    captions = _input_table(images_store, "demo", 0, [labs["t5"]], by_label, False)
    assert "image" not in captions.column_names and captions.column("caption").null_count == 0
    assert captions.num_rows == 4
    assert "image" in _input_table(images_store, "demo", 0, [labs["dinov2"]], by_label, False).column_names
