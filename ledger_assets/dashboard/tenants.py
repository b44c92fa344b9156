"""The tenant directory (name, IANA zone, default currency), read from the system of record.

Tenants are not day-partitioned, so the marts snapshot does not carry them; the directory is one
small query, re-read when a new marts snapshot is published (a new tenant appears in the marts
only then) and at most once per ``min_interval`` seconds otherwise.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class Tenant:
    tenant_id: int
    name: str
    time_zone: str
    default_currency: str


def postgres_tenants(dsn: str) -> Callable[[], dict[int, Tenant]]:
    def load() -> dict[int, Tenant]:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            rows = conn.execute(
                "select tenant_id, name, time_zone, default_currency from ledger.tenants"
            ).fetchall()
        return {int(r[0]): Tenant(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows}

    return load


class TenantDirectory:
    def __init__(self, load: Callable[[], dict[int, Tenant]], min_interval: float = 60) -> None:
        self._load = load
        self._min_interval = min_interval
        self._lock = threading.Lock()
        self._tenants: dict[int, Tenant] | None = None
        self._version: str | None = None
        self._loaded_at = 0.0

    def tenants(self, snapshot_version: str) -> Mapping[int, Tenant]:
        with self._lock:
            stale = (
                self._tenants is None
                or snapshot_version != self._version
                or time.monotonic() - self._loaded_at > self._min_interval
            )
            if stale:
                self._tenants = self._load()
                self._version = snapshot_version
                self._loaded_at = time.monotonic()
            assert self._tenants is not None
            return self._tenants
