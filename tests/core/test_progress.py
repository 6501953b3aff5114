"""fourm_core.progress: records at the first step, then only when the interval has passed (a fake clock, not
sleeps), and at close; each carries done / total / rate / ETA; a bad interval is refused naming the variable."""

from __future__ import annotations

import logging

import pytest

from fourm_core.progress import EVERY_ENV, LOGGER, ProgressLog, every_s


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_logs_when_due_with_figures(caplog) -> None:
    clock = Clock()
    caplog.set_level(logging.INFO, logger=LOGGER)
    p = ProgressLog("train x", total=10, unit="step", every=30.0, clock=clock, bar=False)
    for _ in range(10):
        clock.t += 7.0  # 7 s per step: due at steps 1, 6 (35 s after step 1), and closed at 10
        p.advance(samples=4, loss=0.5)
    p.close()
    figs = [r.progress for r in caplog.records if r.name == LOGGER]
    assert [f["done"] for f in figs] == [1, 6, 10]
    assert all(f["total"] == 10 and f["unit"] == "step" and f["loss"] == 0.5 for f in figs)
    assert figs[0]["eta_s"] == pytest.approx(63.0) and figs[-1]["eta_s"] == 0.0
    assert figs[-1]["samples"] == 40 and figs[-1]["samples_per_s"] == pytest.approx(40 / 70, rel=1e-3)
    assert "train x: 6/10 steps" in caplog.records[1].getMessage() and "ETA 28s" in caplog.records[1].getMessage()


def test_close_does_not_repeat_the_last_record(caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    with ProgressLog("x", total=2, every=0.0, bar=False) as p:
        p.advance()
        p.advance()
    assert [r.progress["done"] for r in caplog.records] == [1, 2]


def test_interval_from_environment(monkeypatch) -> None:
    monkeypatch.setenv(EVERY_ENV, "0.5")
    assert every_s() == 0.5
    monkeypatch.setenv(EVERY_ENV, "soon")
    with pytest.raises(ValueError, match=EVERY_ENV):
        every_s()
    monkeypatch.delenv(EVERY_ENV)
    assert every_s() == 30.0
