"""Progress of one long job (a stage's shards, a tokenizer's training steps): done / total, rate, ETA.

Stage libraries import no Prefect, so they log progress as plain ``logging`` records on the ``fourm.progress``
logger, each carrying the figures as ``record.progress`` (a dict: what, done, total, unit, rate, eta_s, elapsed_s
and any metrics such as loss). The orchestration layer forwards that logger to the Prefect run log
(``pipelines.run_log``); on a terminal a tqdm bar shows the same count.

    progress = ProgressLog("train semseg_vqvae", total=cfg.steps, unit="step")
    for step in range(cfg.steps):
        ...
        progress.advance(loss=float(loss))
    progress.close()

A record is logged at the first advance, then whenever ``every_s`` seconds have passed since the last one, and
at ``close``: a job is never silent for longer than ``every_s`` plus one step.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Any, Callable

LOGGER = "fourm.progress"
EVERY_ENV = "FOURM_PROGRESS_EVERY_S"
DEFAULT_EVERY_S = 30.0  # issue 13: every long stage logs progress at least every 30 s


def every_s() -> float:
    """The logging interval: ``$FOURM_PROGRESS_EVERY_S`` (seconds, >= 0), else 30."""
    text = os.environ.get(EVERY_ENV)
    if not text:
        return DEFAULT_EVERY_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ValueError(f"${EVERY_ENV}={text!r} must be a number of seconds >= 0 (e.g. 30)")
    return value


class ProgressMeter:
    """Counts and the derived figures (rate, ETA) of one job; no output of its own."""

    def __init__(self, what: str, total: int, unit: str = "unit", clock: Callable[[], float] = time.monotonic):
        self.what, self.total, self.unit, self.clock = what, int(total), unit, clock
        self.done = 0
        self.samples = 0  # samples behind the units done (a shard's rows, a step's batch), when counted
        self.t0 = clock()

    def elapsed(self) -> float:
        return self.clock() - self.t0

    def rate(self) -> float:
        """Units per second so far (0 before the first)."""
        elapsed = self.elapsed()
        return self.done / elapsed if elapsed > 0 else 0.0

    def samples_per_s(self) -> float:
        elapsed = self.elapsed()
        return self.samples / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        """Seconds left at the rate so far; None before the first unit (no rate yet)."""
        if not self.done:
            return None
        return self.elapsed() / self.done * max(0, self.total - self.done)

    def eta_text(self) -> str:
        eta = self.eta_s()
        return "?" if eta is None or math.isnan(eta) else f"{eta:.0f}s"

    def figures(self) -> dict[str, Any]:
        return {"what": self.what, "done": self.done, "total": self.total, "unit": self.unit,
                "rate": round(self.rate(), 3), "samples": self.samples,
                "samples_per_s": round(self.samples_per_s(), 3), "eta_s": None if self.eta_s() is None else round(self.eta_s(), 1),
                "elapsed_s": round(self.elapsed(), 1)}


class ProgressLog(ProgressMeter):
    """A :class:`ProgressMeter` that logs itself (see the module docstring) and drives a tqdm bar on a tty."""

    def __init__(self, what: str, total: int, unit: str = "unit", *, every: float | None = None,
                 logger: logging.Logger | None = None, clock: Callable[[], float] = time.monotonic,
                 bar: bool | None = None):
        super().__init__(what, total, unit, clock)
        self.every = every_s() if every is None else every
        self.logger = logger or logging.getLogger(LOGGER)
        self.metrics: dict[str, Any] = {}
        self._last: float | None = None
        self._logged_done: int | None = None
        self._bar = None
        if (sys.stderr.isatty() if bar is None else bar) and self.total > 0:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=what, unit=unit, leave=False, file=sys.stderr)

    def advance(self, n: int = 1, samples: int = 0, **metrics: Any) -> None:
        """``n`` more units done (holding ``samples`` samples); ``metrics`` (e.g. ``loss=0.12``) are reported
        with the next record."""
        self.done += n
        self.samples += samples
        self.metrics.update(metrics)
        if self._bar is not None:
            self._bar.update(n)
            if metrics:
                self._bar.set_postfix({k: _short(v) for k, v in metrics.items()}, refresh=False)
        now = self.clock()
        if self._last is None or now - self._last >= self.every:
            self.log()

    def line(self) -> str:
        extra = "".join(f", {k} {_short(v)}" for k, v in self.metrics.items())
        samples = f", {self.samples} samples, {self.samples_per_s():.1f} samples/s" if self.samples else ""
        return (f"{self.what}: {self.done}/{self.total} {self.unit}s, {self.rate():.2f} {self.unit}s/s{samples}, "
                f"{self.elapsed():.0f}s elapsed, ETA {self.eta_text()}{extra}")

    def log(self) -> None:
        self._last, self._logged_done = self.clock(), self.done
        self.logger.info(self.line(), extra={"progress": {**self.figures(), **self.metrics}})

    def close(self) -> None:
        """The final record (unless the last advance just logged this count) and the bar's end."""
        if self._logged_done != self.done:
            self.log()
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "ProgressLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
