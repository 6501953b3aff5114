"""Tokenizer training (one long unit of train-tokenizers) reports its steps: done / total, loss, samples/s and
ETA on the fourm.progress logger, at the configured interval (0 here: every step)."""

from __future__ import annotations

import logging

from fourm_core.progress import EVERY_ENV, LOGGER
from tokenize_stage.labels import commit_synthetic_labels
from tokenize_stage.train_tokenizer import TrainTokenizerConfig, train_tokenizer


def test_training_steps_are_logged(store, monkeypatch, caplog):
    commit_synthetic_labels(store, "syn", "mask_vq", n_samples=24, shard_size=24)
    monkeypatch.setenv(EVERY_ENV, "0")
    caplog.set_level(logging.INFO, logger=LOGGER)
    cfg = TrainTokenizerConfig(tokenizer="mask_vq", profile="tiny", steps=4, batch_size=4, eval_samples=8)
    assert train_tokenizer(store, "syn", cfg).status.value == "done"
    figs = [r.progress for r in caplog.records if r.name == LOGGER]
    assert [f["done"] for f in figs] == [1, 2, 3, 4]
    assert {f["total"] for f in figs} == {4} and {f["unit"] for f in figs} == {"step"}
    assert all(isinstance(f["loss"], float) and f["eta_s"] is not None for f in figs) and figs[-1]["eta_s"] == 0.0
    assert figs[-1]["samples"] == 16 and figs[-1]["samples_per_s"] > 0
    assert caplog.records[-1].getMessage().startswith("train-tokenizers mask_vq: 4/4 steps")
