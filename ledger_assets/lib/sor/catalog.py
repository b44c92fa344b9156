"""What the system of record holds, and cheap facts about its tables.

``MIRRORED_TABLES`` is the list the CDC publication, the lake and the reconciliation all use:
each mirrored table with the column that decides a row's account-local day.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import psycopg

SCHEMA = "ledger"


@dataclass(frozen=True)
class MirroredTable:
    name: str
    primary_key: str
    #: The column that places a row in a local day: an instant converted with the tenant's
    #: zone ("instant"), or a bank calendar date used as-is ("local_date").
    day_column: str
    day_kind: Literal["instant", "local_date"]


MIRRORED_TABLES: tuple[MirroredTable, ...] = (
    MirroredTable("stripe_charges", "id", "created", "instant"),
    MirroredTable("stripe_refunds", "id", "created", "instant"),
    MirroredTable("stripe_disputes", "id", "created", "instant"),
    MirroredTable("stripe_payouts", "id", "created", "instant"),
    MirroredTable("stripe_balance_transactions", "id", "created", "instant"),
    MirroredTable("plaid_transactions", "transaction_id", "date", "local_date"),
)


@dataclass(frozen=True)
class TableActivity:
    table: str
    #: The planner's row estimate (pg_class.reltuples): free to read even at 200M rows.
    row_estimate: int
    #: Rows inserted + updated + deleted since stats were reset; grows with every write, so it
    #: serves as the table's data version without scanning it.
    writes: int


def table_activity(conn: psycopg.Connection[tuple[object, ...]]) -> list[TableActivity]:
    """Row estimates and write counters for every mirrored table, without scanning any."""
    names = [t.name for t in MIRRORED_TABLES]
    rows = conn.execute(
        """
        select c.relname,
               greatest(c.reltuples, 0)::bigint,
               coalesce(s.n_tup_ins + s.n_tup_upd + s.n_tup_del, 0)
        from pg_class c
        join pg_namespace n on n.oid = c.relnamespace
        left join pg_stat_user_tables s on s.relid = c.oid
        where n.nspname = %s and c.relname = any(%s)
        order by c.relname
        """,
        (SCHEMA, names),
    ).fetchall()
    return [TableActivity(str(r[0]), int(str(r[1])), int(str(r[2]))) for r in rows]


def tenant_ids(conn: psycopg.Connection[tuple[object, ...]]) -> list[int]:
    """Every tenant id in the system of record, ascending."""
    rows = conn.execute("select tenant_id from ledger.tenants order by tenant_id").fetchall()
    return [int(str(r[0])) for r in rows]


def stripe_accounts(conn: psycopg.Connection[tuple[object, ...]]) -> list[tuple[int, str]]:
    """(tenant_id, Stripe account id) of every tenant, by tenant id."""
    rows = conn.execute(
        "select tenant_id, stripe_account_id from ledger.tenants order by tenant_id"
    ).fetchall()
    return [(int(str(t)), str(a)) for t, a in rows]


def plaid_items(conn: psycopg.Connection[tuple[object, ...]]) -> list[tuple[str, int, str]]:
    """(item_id, tenant_id, access_token) of every item we can read, by item id."""
    rows = conn.execute(
        "select item_id, tenant_id, access_token from ledger.plaid_items "
        "where access_token is not null order by item_id"
    ).fetchall()
    return [(str(i), int(str(t)), str(a)) for i, t, a in rows]
