"""Tenant-scoped sessions: the one place application queries get their tenant.

Row-level security (migration 0002) shows the ``ledger_app`` role only the rows of the tenant
named in the transaction-local setting ``app.tenant_id``. This module is the only code that
sets it, always through a bound parameter.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

APP_ROLE = "ledger_app"


@contextmanager
def tenant_transaction(
    conn: psycopg.Connection[tuple[object, ...]], tenant_id: int
) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A transaction that runs as ``ledger_app`` and sees ``tenant_id``'s rows only.

    ``SET LOCAL ROLE`` and ``set_config(..., true)`` both end with the transaction, so a pooled
    connection never carries one tenant's scope into the next use.
    """
    if not isinstance(tenant_id, int) or isinstance(tenant_id, bool) or tenant_id <= 0:
        raise ValueError(f"tenant_id must be a positive integer, got {tenant_id!r}")
    with conn.transaction():
        conn.execute(f"set local role {APP_ROLE}")
        conn.execute("select set_config('app.tenant_id', %s, true)", (str(tenant_id),))
        yield conn
