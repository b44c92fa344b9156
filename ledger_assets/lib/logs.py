"""Structured logging: one JSON object (or a readable line on a terminal) per event.

Code binds the coordinates that matter to an operator, so every line says which tenant,
partition and LSN it is about: ``log = get_logger(__name__).bind(tenant_id=7, lsn="0/1A2B")``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def configure_logging(level: str = "INFO", json: bool | None = None) -> None:
    """Route structlog and the stdlib ``logging`` module through one renderer.

    Args:
        level: the minimum level name.
        json: JSON lines when True; a console renderer when False; when None, JSON unless
            stderr is a terminal.
    """
    render_json = (not sys.stderr.isatty()) if json is None else json
    renderer: Any = (
        structlog.processors.JSONRenderer() if render_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    """A structlog logger whose events carry ``logger_name=name``."""
    return structlog.get_logger(logger_name=name)
