"""Token-shard loading: mixing, text-only datasets, one crop per sample, resumable position."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from fourm_core import ArtifactStore
from fourm_core.units import Unit, UnitOutput, run_unit
from train_stage.batch import MaskedBatch
from train_stage.data import DatasetSpec, PackedBatch, ResumableLoader, TokenShardStream
from train_stage.masking import Masker
from train_stage.mixture import load_mixture
from train_stage.synthetic import make_token_shards

MODS = ["caption", "tok_semseg@224", "tok_dinov2_global"]


def masker(mods=MODS, n=1):
    mix = load_mixture("demo").model_copy(update={"modalities": mods, "input_budget": 32, "target_budget": 32})
    c4 = load_mixture("c4_caption").model_copy(update={"modalities": mods, "input_budget": 32, "target_budget": 32,
                                                       "budget_mode": mix.budget_mode})
    return Masker([mix, c4][:n] if n == 2 else [mix], mods)


def test_mixing_is_exact_and_text_only_dataset_feeds_only_caption(tmp_path):
    store = ArtifactStore(str(tmp_path))
    make_token_shards(store, "img", MODS, n_shards=1, shard_size=16)
    make_token_shards(store, "c4", ["caption"], n_shards=1, shard_size=16)
    specs = [DatasetSpec("img", 0.75, tuple(MODS)), DatasetSpec("c4", 0.25, ("caption",))]
    s = TokenShardStream(str(tmp_path), specs, masker(n=2), batch_size=8)
    assert s.dataset_counts(10).tolist() == [60, 20]
    assert (s.dataset_counts(3) + 0).sum() == 24
    raw = s.raw_batch(0)
    is_c4 = raw.dataset == 1
    assert int(is_c4.sum()) == 2
    assert (raw.lengths["tok_semseg@224"][is_c4] == 0).all() and (raw.lengths["caption"][is_c4] > 0).all()
    b = s.make_batch(0)
    from train_stage.batch import MODALITY_INDEX

    cap = MODALITY_INDEX["caption"]
    for i in torch.nonzero(is_c4)[:, 0].tolist():
        assert set(b.enc_modality[i][b.enc_valid[i]].tolist()) <= {cap}
        assert set(b.dec_modality[i][b.dec_valid[i]].tolist()) <= {cap}


def test_one_crop_per_sample_for_every_modality(tmp_path):
    """Hand-made shards whose tokens spell the crop: every modality of a sample shows the same crop."""
    store = ArtifactStore(str(tmp_path))
    mods = ["tok_semseg@224", "tok_dinov2_global"]
    keys = [f"k{i}" for i in range(12)]

    def compute():
        tables = {}
        for m, L in (("tok_semseg-224", 196), ("tok_dinov2_global", 16)):
            rows = [(k, c, [c + 1] * L) for k in keys for c in range(3)]
            tables[f"tokens/{m}"] = pa.table({"sample_key": [r[0] for r in rows],
                                              "crop": pa.array([r[1] for r in rows], pa.int16()),
                                              "tokens": pa.array([r[2] for r in rows], pa.list_(pa.int16()))})
        return UnitOutput(tables=tables)

    run_unit(store, Unit("test", "ds", ["tokens/tok_semseg-224", "tokens/tok_dinov2_global"], 0, "1"), compute)
    s = TokenShardStream(str(tmp_path), [DatasetSpec("ds", 1.0, tuple(mods))], masker(mods), batch_size=12)
    seen = set()
    for b in range(4):
        raw = s.raw_batch(b)
        a, g = raw.tokens["tok_semseg@224"], raw.tokens["tok_dinov2_global"]
        assert torch.equal(a[:, 0], g[:, 0]) and (a == a[:, :1]).all()
        seen |= set(a[:, 0].tolist())
    assert seen == {1, 2, 3}  # all crops get used


def test_epoch_visits_every_sample_once(tmp_path):
    store = ArtifactStore(str(tmp_path))
    make_token_shards(store, "synth", MODS, n_shards=3, shard_size=8)
    s = TokenShardStream(str(tmp_path), [DatasetSpec("synth", 1.0, tuple(MODS))], masker(), batch_size=4)
    keys = []
    for b in range(6):  # 24 samples = one epoch
        keys.extend(s.raw_batch(b).keys)
    assert len(set(keys)) == 24
    nxt = s.raw_batch(6).keys  # the next epoch starts over in a new order
    assert set(nxt) <= set(keys)


def test_resumed_loader_continues_with_the_next_unseen_batch(tmp_path):
    store = ArtifactStore(str(tmp_path))
    make_token_shards(store, "synth", MODS, n_shards=2, shard_size=8)
    s = TokenShardStream(str(tmp_path), [DatasetSpec("synth", 1.0, tuple(MODS))], masker(), batch_size=4)
    loader = ResumableLoader(s, num_workers=2)
    seen = [next(loader) for _ in range(4)]
    state = {"next_batch": 2, "seed": 0}
    assert loader.state_dict()["next_batch"] == 4
    workers = list(loader._it._workers)
    loader.close()  # workers stop now; the position is kept and the next batch starts new workers
    assert not any(w.is_alive() for w in workers) and loader.state_dict()["next_batch"] == 4
    nxt = next(loader)
    assert loader.state_dict()["next_batch"] == 5
    loader.close()
    fresh = ResumableLoader(TokenShardStream(str(tmp_path), [DatasetSpec("synth", 1.0, tuple(MODS))], masker(),
                                             batch_size=4), num_workers=0)
    fresh.load_state_dict(state)
    for want in seen[2:] + [nxt]:  # nxt: the batch after a close() is the one that was next
        got = next(fresh)
        assert torch.equal(got.enc_tokens, want.enc_tokens) and torch.equal(got.dec_labels, want.dec_labels)
    # ranks read disjoint global batches
    r1 = TokenShardStream(str(tmp_path), [DatasetSpec("synth", 1.0, tuple(MODS))], masker(), batch_size=4, rank=1,
                          world_size=2)
    assert torch.equal(next(iter(r1)).enc_tokens, seen[1].enc_tokens)


class _FaultProbeStream(TokenShardStream):
    """Yields, from inside the loader's worker, the page faults of re-allocating a freed 40 MB block."""

    def __iter__(self):
        from tests.core.test_allocator import reallocation_faults

        while True:
            yield reallocation_faults(40)


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator policy")
def test_loader_workers_reuse_freed_batches_without_page_faults(tmp_path):
    # a worker builds same-shaped batches all its life: it keeps freed memory in its heap (fourm_core.allocator)
    store = ArtifactStore(str(tmp_path))
    make_token_shards(store, "synth", MODS, n_shards=1, shard_size=8)
    loader = ResumableLoader(_FaultProbeStream(str(tmp_path), [DatasetSpec("synth", 1.0, tuple(MODS))], masker(),
                                               batch_size=4), num_workers=1)
    try:
        assert next(loader) <= 1
    finally:
        loader.close()


def _masked_batch() -> MaskedBatch:
    ints = [torch.arange(8 * 32).reshape(8, 32) + k for k in range(9)]
    for k in (3, 7):  # enc_valid, dec_valid
        ints[k] = ints[k] % 2 == 0
    return MaskedBatch(*ints, pixels={"rgb@224": torch.rand(8, 4, 12)}, embeddings={"t5_caption": torch.rand(8, 3, 5)})


def test_packed_batches_own_their_arrays_and_unpack_to_the_same_batch():
    batch = _masked_batch()
    packed = PackedBatch.pack(batch)
    arrays = [a for v in packed.arrays.values() for a in (v.values() if isinstance(v, dict) else [v])]
    # no view of a tensor: freeing a packed batch never calls into torch (see the next test)
    assert arrays and all(a.flags.owndata and a.base is None for a in arrays)
    back = packed.unpack()
    assert torch.equal(back.enc_tokens, batch.enc_tokens) and torch.equal(back.dec_valid, batch.dec_valid)
    assert torch.equal(back.pixels["rgb@224"], batch.pixels["rgb@224"])
    assert torch.equal(back.embeddings["t5_caption"], batch.embeddings["t5_caption"])


def test_a_worker_that_exits_while_its_queue_thread_frees_batches_exits_cleanly():
    # A loader worker's multiprocessing queue frees each batch in its feeder thread, a daemon thread that may
    # still run while the worker's interpreter finalizes. When a packed batch held views of tensors, freeing one
    # retook the GIL inside torch's C++ there and the worker aborted ("terminate called without an active
    # exception", SIGABRT): 10 runs of 10 before the arrays owned their memory.
    probe = textwrap.dedent("""
        import sys, threading
        from tests.train.test_data import _masked_batch
        from train_stage.data import PackedBatch

        packed = [PackedBatch.pack(_masked_batch()) for _ in range(20000)]
        started = threading.Event()

        def feeder():  # what the queue's feeder thread does with each batch once it is pickled: let it go
            started.set()
            while packed:
                packed.pop()

        threading.Thread(target=feeder, daemon=True).start()
        started.wait()
        sys.exit(0)  # finalize while the daemon thread is still freeing batches
    """)
    repo = str(Path(__file__).resolve().parents[2])
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=repo)
    assert (done.returncode, "terminate called" in done.stderr) == (0, False), done.stderr[-2000:]
