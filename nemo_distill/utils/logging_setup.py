"""Where nemo-distill's own log messages go: stderr, INFO and above, in the driver and in every worker.

Python's default shows only warnings, so without this the library's INFO lines (the Ray cluster it
attached to, the workers it started, a resume with changed settings, pseudo-labels found on disk)
were never seen. :func:`configure_logging` runs once in each entry point (``run_main``) and in each
worker process (``WorkerHost.construct``), where Ray forwards stderr to the driver's console with
the actor's name in front.

``NEMO_DISTILL_LOG_LEVEL`` (``DEBUG``, ``INFO``, ``WARNING``, ``ERROR``; default ``INFO``) sets the
level. Only the ``nemo_distill`` logger gets a handler, and only when the root logger has none: an
application (or pytest) that configures logging itself keeps full control and sees no duplicates.
"""

from __future__ import annotations

import logging
import os
import sys

from nemo_distill.config.errors import UserError

LOG_LEVEL_ENV = "NEMO_DISTILL_LOG_LEVEL"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_HANDLER_NAME = "nemo_distill.stderr"


def log_level_from_env() -> int:
    """The level ``NEMO_DISTILL_LOG_LEVEL`` names (default INFO); a clear error for anything else."""
    name = os.environ.get(LOG_LEVEL_ENV, "INFO").strip().upper()
    if name not in LEVELS:
        raise UserError(f"{LOG_LEVEL_ENV}={os.environ[LOG_LEVEL_ENV]!r} is not a log level; use one of {', '.join(LEVELS)}")
    return getattr(logging, name)


def configure_logging() -> None:
    """Send ``nemo_distill.*`` records at the configured level to stderr (idempotent)."""
    logger = logging.getLogger("nemo_distill")
    logger.setLevel(log_level_from_env())
    if logging.getLogger().handlers or any(handler.get_name() == _HANDLER_NAME for handler in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    logger.addHandler(handler)
