"""Serve an ASGI app with uvicorn on a loopback port for the duration of a test."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ledger_assets.lib.asgi import serve_in_thread
from ledger_assets.lib.sor.pgcluster import find_free_port


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Yield the base URL of ``app`` served over real HTTP on 127.0.0.1."""
    with serve_in_thread(app, "127.0.0.1", find_free_port(), "test") as url:
        yield url
