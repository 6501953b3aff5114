"""Forward the stage libraries' progress records (logger ``fourm.progress``, fourm_core.progress) to the
Prefect run log.

Stage libraries import no Prefect; Prefect only ships records of its own loggers (and those named in
``PREFECT_LOGGING_EXTRA_LOGGERS`` when logging is set up). A flow calls :func:`forward_progress` once: from then
on every progress record made inside a flow or task run of this process (e.g. ``train-tokenizers``'s steps,
which run in the task's thread) appears in that run's log, with its task run; records made outside any run
(a CLI without Prefect, a test) are left to the ordinary handlers.
"""

from __future__ import annotations

import logging

from prefect.exceptions import MissingContextError
from prefect.logging.handlers import APILogHandler

from fourm_core.progress import LOGGER


class _RunLogHandler(APILogHandler):
    """Prefect's API handler, silent outside a run context instead of reporting an error."""

    def emit(self, record: logging.LogRecord) -> None:
        from prefect.context import get_run_context

        try:
            get_run_context()
        except MissingContextError:
            return
        super().emit(record)


def forward_progress() -> logging.Logger:
    """Attach the run-log handler to ``fourm.progress`` (once per process) and let INFO records through."""
    logger = logging.getLogger(LOGGER)
    if not any(isinstance(h, _RunLogHandler) for h in logger.handlers):
        logger.addHandler(_RunLogHandler())
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    return logger
