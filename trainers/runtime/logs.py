"""Logging for every cappuccino process: structlog events as JSON lines in
``<root>/logs/<component>.log`` (rotated at 10 MB, 5 files kept; readable with ``tail -f``)
and, on stderr, a human renderer when stderr is a terminal (JSON otherwise).

Each event carries ``component`` and ``pid``; callers bind ``study`` and ``trial``.
Standard-library loggers (Optuna, APScheduler) go through the same handlers.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import Any

import optuna
import structlog

from trainers.runtime.layout import Layout

MAX_BYTES = 10 * 1024 * 1024
BACKUP_COUNT = 5

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
]


def configure_logging(
    component: str, root: Path | None = None, level: str = "info", console: bool = True
) -> structlog.stdlib.BoundLogger:
    """Set up structlog + stdlib logging for this process and return a bound logger.

    Args:
        component: e.g. ``supervisor``, ``worker-0``, ``paper_trader``.
        root: runtime root; when given, JSON lines go to ``<root>/logs/<component>.log``.
        level: ``debug``, ``info``, ``warning`` or ``error``.
        console: also log to stderr (human renderer on a terminal, JSON otherwise).
    """
    json_formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
    handlers: list[logging.Handler] = []
    if root is not None:
        path = Layout(root).log(component)
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=MAX_BYTES, backupCount=BACKUP_COUNT, encoding="utf-8"
        )
        file_handler.setFormatter(json_formatter)
        handlers.append(file_handler)
    if console:
        stream = logging.StreamHandler(sys.stderr)
        if sys.stderr.isatty():
            stream.setFormatter(
                structlog.stdlib.ProcessorFormatter(
                    foreign_pre_chain=_SHARED,
                    processors=[
                        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        structlog.dev.ConsoleRenderer(colors=True),
                    ],
                )
            )
        else:
            stream.setFormatter(json_formatter)
        handlers.append(stream)
    top = logging.getLogger()
    for h in list(top.handlers):
        top.removeHandler(h)
        h.close()
    for h in handlers:
        top.addHandler(h)
    top.setLevel(level.upper())
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(component=component, pid=os.getpid())
    return structlog.stdlib.get_logger(component)
