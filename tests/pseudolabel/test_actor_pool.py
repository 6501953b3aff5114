"""Labeler actors live across the shards of a run: one actor (one model load) labels every shard, also shards
passed concurrently; a new config gets its own pool; ``release_pools`` ends them."""

import os
import sys
import threading
import time

import pytest

from fourm_core import ArtifactStore, NotCommittedError
from fourm_core.units import UnitStatus
from pseudolabel.actor_pool import POOLS, release_pools
from pseudolabel.ray_pass import call_rows, regroup
from pseudolabel.stage import PseudolabelUnitsFailed, run_shard

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


def test_call_rows_sends_several_batches_per_call_and_a_call_to_every_actor():
    assert call_rows(4, 32, 1) == 32  # a 32-image shard of a batch-4 labeler: one call, labelled 4 at a time
    assert call_rows(8, 1000, 1) == 64  # big shards still stream in calls of CALL_ROWS
    assert call_rows(4, 32, 2) == 16  # two actors: a call each
    assert call_rows(8, 4, 3) == 8  # never less than one batch
    assert call_rows(128, 32, 1) == 128


def test_decoded_batches_decode_ahead_in_order_like_one_decode_step():
    """The first step's decode, a batch ahead in a thread: same rows, same pixels, same per-row decode errors."""
    import pyarrow as pa

    from pseudolabel.runner import decode_step, decoded_batches
    from pseudolabel.testing import demo_samples, images_table

    table = images_table(demo_samples(0, 7, size=48))
    images = table.column("image").to_pylist()
    images[4] = b"not a jpeg"
    table = table.set_column(table.column_names.index("image"), "image", pa.array(images, pa.binary()))
    batches = list(decoded_batches(table, 3, True))
    assert [b.num_rows for b in batches] == [3, 3, 1]
    whole = decode_step(table)

    assert pa.concat_tables(batches).equals(whole)  # the same error text on every call (no buffer address)
    assert whole.column("_decode_error").to_pylist()[4] == "UnidentifiedImageError: not a known image format (10 bytes)"
    assert [e is None for e in whole.column("_decode_error").to_pylist()] == [i != 4 for i in range(7)]
    captions_only = list(decoded_batches(table, 3, False))  # nothing to decode: empty pixel columns, no thread
    assert pa.concat_tables(captions_only).equals(decode_step(table, False))


def test_rgb_views_are_the_decoded_pixels_of_every_row_read_only():
    """label_step's pixels: views of the decoded column (no copy per image), equal to each row's bytes, for
    slices and several chunks, None where the decode failed, and read-only like the bytes they replace."""
    import numpy as np
    import pyarrow as pa

    from pseudolabel.runner import _rgb_list, decode_step
    from pseudolabel.testing import demo_samples, images_table

    table = images_table(demo_samples(0, 9, size=40))
    images = table.column("image").to_pylist()
    images[2], images[6] = b"not a jpeg", None
    decoded = decode_step(table.set_column(table.column_names.index("image"), "image", pa.array(images, pa.binary())))
    for t in (decoded, decoded.slice(3, 5), pa.concat_tables([decoded.slice(0, 4), decoded.slice(5)]).slice(1, 7)):
        rows = t.to_pylist()
        views = _rgb_list(t)
        assert len(views) == len(rows)
        for row, view in zip(rows, views):
            if row["_rgb"] is None:
                assert view is None
                continue
            assert view.shape == (row["_h"], row["_w"], 3) and not view.flags.writeable
            assert np.array_equal(view, np.frombuffer(row["_rgb"], np.uint8).reshape(view.shape))


def test_two_calls_in_one_actor_take_turns_in_the_model_and_label_as_one_call_would():
    """label_range with the actor's model lock, from two threads at once (an actor running CALLS_IN_ACTOR calls):
    the labeler is never entered twice at the same time, and each call's rows come out as a lone call's."""
    import pyarrow as pa

    from pseudolabel.runner import LabelerRun, label_range
    from pseudolabel.testing import demo_samples, images_table

    lab = LabelerRun("faulty", {"sleep_s": 0.02, "batch_size": 2}, frozenset({"faulty"}), (PLUGIN,)).build()
    tables = [images_table(demo_samples(s, 6, size=48)).append_column("_idx", pa.array(range(6), pa.int64()))
              for s in (0, 1)]
    alone = [label_range(lab, 0, 6, True, [t], True) for t in tables]
    lock, out = threading.Lock(), {}
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, label_range(lab, 0, 6, True, [tables[i]], True,
                                                                                  lock))) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i in (0, 1):
        assert out[i].column("_err.faulty").null_count == 6  # no "entered by two calls at once"
        assert out[i].equals(alone[i])


def test_shards_passing_at_once_share_an_actor_without_overlapping_in_its_model(images_store, ray_session):
    cfg = dataset_config(runner="ray", labelers=["faulty"], plugins=[PLUGIN],
                         settings={"faulty": {"sleep_s": 0.1, "batch_size": 1}})
    outcome = {}
    threads = [threading.Thread(target=lambda s=s: outcome.__setitem__(s, run_shard(images_store, cfg, s)))
               for s in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for s in (0, 1):
        assert [r.status for r in outcome[s]] == [UnitStatus.DONE]
        assert images_store.read_table("demo", "labels/faulty", s).num_rows == 4
        assert images_store.read_errors("demo", "labels/faulty", s).num_rows == 0  # never two batches at once


def test_a_shard_whose_commit_fails_is_not_visible_and_the_concurrent_one_commits(images_store, ray_session,
                                                                                  monkeypatch):
    # Shards of a run pass concurrently and share one actor pool; shard 1's commit dies between its data
    # files and its manifest. Shard 0 commits; shard 1 is invisible (no manifest), its failure is recorded,
    # and its retry commits it.
    cfg = dataset_config(runner="ray", labelers=["faulty"], plugins=[PLUGIN])
    real = ArtifactStore.commit

    def dies_on_shard_1(self, fields, files, main, before_manifest=None):
        def crash():
            raise OSError("lost the disk mid-commit")
        return real(self, fields, files, main, crash if fields["shard"] == 1 else before_manifest)

    monkeypatch.setattr(ArtifactStore, "commit", dies_on_shard_1)
    outcome = {}

    def run(shard):
        try:
            outcome[shard] = run_shard(images_store, cfg, shard)
        except PseudolabelUnitsFailed as exc:
            outcome[shard] = exc

    threads = [threading.Thread(target=run, args=(s,)) for s in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [r.status for r in outcome[0]] == [UnitStatus.DONE]
    assert isinstance(outcome[1], PseudolabelUnitsFailed) and "lost the disk" in str(outcome[1])
    assert images_store.committed_shards("demo", "labels/faulty") == [0]
    assert images_store.read_table("demo", "labels/faulty", 0).num_rows == 4
    with pytest.raises(NotCommittedError):
        images_store.read_table("demo", "labels/faulty", 1)
    assert 1 in images_store.failed_shards("demo", "labels/faulty")
    monkeypatch.setattr(ArtifactStore, "commit", real)
    assert [r.status for r in run_shard(images_store, cfg, 1)] == [UnitStatus.DONE]
    assert [r.status for r in run_shard(images_store, cfg, 0)] == [UnitStatus.CACHED]
    assert images_store.read_table("demo", "labels/faulty", 1).num_rows == 4


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator policy")
def test_a_labeler_actor_reuses_freed_batches_without_page_faults(images_store, ray_session):
    """The pool's actor process keeps freed memory in its heap (fourm_core.allocator): a batch-sized block
    allocated again after it was freed costs no page faults, where a plain process maps fresh pages each time."""
    import ray

    from tests.core.test_allocator import reallocation_faults

    run_shard(images_store, dataset_config(runner="ray", labelers=["faulty"], plugins=[PLUGIN]), 0)
    (key,) = POOLS.keys()
    actor = POOLS._pools[key].actors[0]
    applied, faults = ray.get(actor.__ray_call__.remote(
        lambda self: (self.retains_freed_memory, reallocation_faults(40))), timeout=60)
    assert applied and faults <= 1, (applied, faults)
