"""Fixtures: small stand-ins in a background thread, a pinned clock, a webhook receiver."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ledger_assets.lib.standins import StandinServers
from ledger_assets.lib.synth.spec import SeedSpec

#: The pinned "now" of the tests: noon UTC on the history's last day + 1.
END = date(2026, 3, 1)
NOW = int(datetime.combine(END, datetime.min.time(), UTC).timestamp()) + 12 * 3600


def small_spec(seed: int = 11) -> SeedSpec:
    """3 tenants, 200 days, ~6k rows: lists of a few hundred objects, late disputes included."""
    return SeedSpec(
        seed=seed,
        tenants=3,
        start=END - timedelta(days=200),
        days=200,
        target_rows=9_000,
        dispute_rate=0.05,
        refund_rate=0.1,
        tenant_size_sigma=0.3,
    )


@dataclass
class Clock:
    """A settable clock for the stand-ins (events retention, live timestamps)."""

    now: float = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="session")
def pristine() -> Iterator[StandinServers]:
    """Stand-ins that no test changes (no ticks, no faults left armed)."""
    with StandinServers.start(small_spec(), clock=Clock()) as servers:
        yield servers


@dataclass
class Received:
    """What the webhook receiver got: (path, headers, raw body) per request."""

    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return [(h, b) for p, h, b in self.requests if p == path]


@pytest.fixture
def receiver() -> Iterator[tuple[str, Received]]:
    """An HTTP endpoint on loopback that records webhook deliveries and answers 200."""
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with received.lock:
                received.requests.append((self.path, dict(self.headers.items()), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
