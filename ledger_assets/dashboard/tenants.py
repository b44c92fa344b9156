"""The tenant directory (name, IANA zone, default currency), read from the system of record.

Tenants are not day-partitioned, so the marts snapshot does not carry them; the directory is one
small query, read when a snapshot is opened (see :class:`.snapshot.Snapshot`), never per request.
"""

from __future__ import annotations

from collections.abc import Callable
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
