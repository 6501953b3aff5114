"""Tokenizers of a dataset train at once, each in its own process (tokenize_stage.train_pool): their training
spans overlap, their weights are bit-identical to training one after another, their progress reaches the caller's
``fourm.progress`` logger, a failed one fails only itself, and a re-run answers from the cache without workers."""

from __future__ import annotations

import logging
import os

import pytest

from fourm_core.progress import EVERY_ENV, LOGGER
from tokenize_stage import train_pool
from tokenize_stage.labels import commit_synthetic_labels
from tokenize_stage.train_pool import THREADS_ENV, WORKERS_ENV, train_many, worker_plan
from tokenize_stage.train_tokenizer import TrainTokenizerConfig

NAMES = ("mask_vq", "pose_vq")


def _configs(steps: int = 40) -> list[TrainTokenizerConfig]:
    return [TrainTokenizerConfig(tokenizer=n, profile="tiny", steps=steps, batch_size=8, eval_samples=8) for n in NAMES]


def _weights(result) -> str:
    return next(f.digest for f in result.manifests[0].files if f.name == "data.safetensors")


def _span(result) -> tuple[float, float]:
    t = result.manifests[0].timings
    return t.started.timestamp(), t.finished.timestamp()


def _labels(store, n_samples: int = 48) -> None:
    for name in NAMES:
        commit_synthetic_labels(store, "syn", name, n_samples=n_samples, shard_size=n_samples)


def test_worker_plan(monkeypatch):
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert worker_plan(11, cpus=2) == (2, 1)
    assert worker_plan(3, cpus=16) == (3, 1)  # one thread each whatever the machine: the weights do not change
    assert worker_plan(0, cpus=4) == (1, 1)
    monkeypatch.setenv(THREADS_ENV, "4")
    assert worker_plan(11, cpus=16) == (4, 4) and worker_plan(11, cpus=2) == (1, 4)
    monkeypatch.setenv(WORKERS_ENV, "3")  # the operator's count, even above the CPUs
    assert worker_plan(11, cpus=2) == (3, 4)
    monkeypatch.setenv(WORKERS_ENV, "none")
    with pytest.raises(ValueError, match=WORKERS_ENV):
        worker_plan(2)


def test_concurrent_equals_sequential(tmp_path, monkeypatch, caplog):
    from fourm_core.store import ArtifactStore

    monkeypatch.setenv(EVERY_ENV, "0")
    monkeypatch.delenv(THREADS_ENV, raising=False)
    caplog.set_level(logging.INFO, logger=LOGGER)
    digests, spans = {}, {}
    for workers in (1, 2):
        monkeypatch.setenv(WORKERS_ENV, str(workers))
        store = ArtifactStore(str(tmp_path / f"w{workers}"))
        _labels(store)
        results = train_many(store, "syn", _configs())
        assert [r.status.value for r in results] == ["done", "done"]
        assert [r.manifests[0].artifact for r in results] == [f"tokenizers/{n}-tiny" for n in NAMES]
        digests[workers] = [_weights(r) for r in results]
        spans[workers] = [_span(r) for r in results]
    assert digests[1] == digests[2]
    (a0, a1), (b0, b1) = spans[2]
    assert a0 < b1 and b0 < a1, f"the two tokenizers did not train at once: {spans[2]}"
    (s0, s1), (t0, t1) = sorted(spans[1])
    assert s1 <= t0, f"one worker trained two tokenizers at once: {spans[1]}"

    # the workers' step records came back to this process's fourm.progress logger
    records = [r for r in caplog.records if r.name == LOGGER]
    for name in NAMES:
        done = [r.progress["done"] for r in records if r.progress["what"] == f"train-tokenizers {name}"]
        assert done[-1] == 40 and len(done) == 2 * 40  # every step, twice (sequential, concurrent)
    assert {r.process for r in records} and os.getpid() not in {r.process for r in records}
    # with two workers, each trained one tokenizer: none took the second before the other worker was up
    concurrent = records[len(records) // 2:]
    by_name = {name: {r.process for r in concurrent if r.progress["what"] == f"train-tokenizers {name}"}
               for name in NAMES}
    assert all(len(p) == 1 for p in by_name.values()) and by_name[NAMES[0]] != by_name[NAMES[1]], by_name

    # a re-run is answered from the committed manifests, without any worker
    monkeypatch.setattr(train_pool, "ProcessPoolExecutor", None)
    again = train_many(ArtifactStore(str(tmp_path / "w2")), "syn", _configs())
    assert [r.status.value for r in again] == ["cached", "cached"] and [_weights(r) for r in again] == digests[2]


def test_a_failed_tokenizer_fails_only_itself(store, monkeypatch):
    monkeypatch.setenv(WORKERS_ENV, "2")
    commit_synthetic_labels(store, "syn", "mask_vq", n_samples=48, shard_size=48)
    commit_synthetic_labels(store, "syn", "pose_vq", n_samples=6, shard_size=6)  # fewer than eval_samples
    with pytest.raises(ValueError, match=r"1 of 2 tokenizer\(s\) failed.*pose_vq: ValueError: .*has 6 samples"):
        train_many(store, "syn", _configs(steps=5))
    assert store.read_manifest("syn", "tokenizers/mask_vq-tiny", None) is not None  # the other one committed
    assert store.read_manifest("syn", "tokenizers/pose_vq-tiny", None) is None


def test_a_single_tokenizer_trains_in_process_with_the_same_weights(tmp_path, monkeypatch, caplog):
    """One tokenizer to train needs no worker (its start-up imports torch and diffusers): it trains here, at the
    workers' thread count, with the weights a worker gives, and leaves this process's threads and RNG as they were."""
    import torch

    from fourm_core.store import ArtifactStore

    monkeypatch.setenv(EVERY_ENV, "0")
    monkeypatch.delenv(THREADS_ENV, raising=False)
    caplog.set_level(logging.INFO, logger=LOGGER)
    pooled = ArtifactStore(str(tmp_path / "pooled"))
    _labels(pooled)
    want = [_weights(r) for r in train_many(pooled, "syn", _configs(steps=20))]  # two: in workers

    here = ArtifactStore(str(tmp_path / "here"))
    _labels(here)
    torch.set_num_threads(2)
    rng = torch.random.get_rng_state()
    monkeypatch.setattr(train_pool, "ProcessPoolExecutor", None)  # any worker would fail
    caplog.clear()
    for i, name in enumerate(NAMES):  # one at a time: the first alone, then the second beside a cached first
        results = train_many(here, "syn", _configs(steps=20)[: i + 1])
        assert results[-1].status.value == "done" and _weights(results[-1]) == want[i], name
    assert torch.get_num_threads() == 2 and torch.equal(torch.random.get_rng_state(), rng)
    assert {r.process for r in caplog.records if r.name == LOGGER} == {os.getpid()}
