"""Logging of the paper-trader process: structlog JSON lines to ``<root>/logs/paper_trader.log``
(rotated: 10 MiB x 5) and to stderr."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

import structlog

MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 5


def configure_logging(log_path: Path, level: str = "info") -> None:
    """Route structlog (and stdlib logging) through JSON lines to ``log_path`` and stderr."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [
        logging.handlers.RotatingFileHandler(log_path, maxBytes=MAX_BYTES, backupCount=BACKUPS),
        logging.StreamHandler(),
    ]
    root = logging.getLogger()
    for h in handlers:
        h.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(h)
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=True,
    )
