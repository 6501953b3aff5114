"""Labeler actors live across the shards of a run: one actor (one model load) labels every shard, also shards
passed concurrently; a new config gets its own pool; ``release_pools`` ends them."""

import os
import threading
import time

from pseudolabel.actor_pool import POOLS, release_pools
from pseudolabel.ray_pass import regroup
from pseudolabel.stage import run_shard

from .conftest import PLUGIN, dataset_config


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_one_actor_labels_every_shard_of_a_run_then_is_released(images_store, ray_session, tmp_path):
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    cfg = dataset_config(runner="ray", labelers=["faulty"], plugins=[PLUGIN],
                         settings={"faulty": {"pid_dir": str(pid_dir)}})
    run_shard(images_store, cfg, 0)
    errors = []

    def again(shard):  # shards passed at the same time share the pool too
        try:
            run_shard(images_store, cfg, shard, force=True)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=again, args=(s,)) for s in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    pids = [int(p.read_text()) for p in pid_dir.iterdir()]
    assert len(pids) == 1  # set up (model loaded) once for three shard passes
    for shard in (0, 1):
        assert set(images_store.read_table("demo", "labels/faulty", shard).column("pid").to_pylist()) == set(pids)
    assert len(POOLS.keys()) == 1

    other = dataset_config(runner="ray", labelers=["faulty"], plugins=[PLUGIN],
                           settings={"faulty": {"pid_dir": str(pid_dir), "sleep_s": 0.01}})
    run_shard(images_store, other, 1, force=True)  # other settings: another pool, another actor
    assert len(list(pid_dir.iterdir())) == 2
    release_pools()
    assert POOLS.keys() == []
    deadline = time.time() + 30
    while any(_alive(int(p.read_text())) for p in pid_dir.iterdir()) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(int(p.read_text())) for p in pid_dir.iterdir())  # the actors' processes ended


def test_regroup_rechunks_rows_for_each_labelers_batch_size():
    # 10 rows decoded in chunks of 4 -> a labeler with batch 3: chunk k spans the old chunks it overlaps
    assert regroup([4, 4, 2], 3) == [([0], 0, 3), ([0, 1], 3, 3), ([1, 2], 2, 3), ([2], 1, 1)]
    assert regroup([4, 4, 2], 4) == [([0], 0, 4), ([1], 0, 4), ([2], 0, 2)]
    assert regroup([4, 4, 2], 16) == [([0, 1, 2], 0, 10)]
