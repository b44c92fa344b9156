"""``snapshot``: the lake's initial snapshot against the usual ways of reading Postgres in Python.

Seeds a synthetic system of record (``--rows`` across all tables, ``--tenants``, ``--years`` of
days) and snapshots its two largest tables, stripe_charges and stripe_balance_transactions,
into day base files (``lib/lake/snapshot.snapshot_table``: read, local day, sort, Parquet).
In the same run, the same two tables are read (``select *``, nothing written) by:

* ``pandas.read_sql`` over a psycopg connection (rows become Python objects, then a DataFrame);
* ADBC (``adbc-driver-postgresql``: binary COPY decoded into Arrow in C++), one connection;
* ConnectorX (Rust, into Arrow), two connections partitioned on ``tenant_id``;
* raw ``COPY ... TO STDOUT (FORMAT binary)`` through psycopg, bytes counted and dropped: the
  server plus psycopg's per-row loop, no decoding; also for four small columns only (how much
  is row width: the issue's "raw COPY 1.23M rows/s" matches narrow rows, not these tables);
* the server alone: ``COPY ... TO '/dev/null'``, no client at all (needs a superuser).

Each reader runs twice and keeps its best time; rows/s are over both tables together. The
snapshot does strictly more than any reader (zone conversion, sort, compressed files per day),
so a ratio above 1 against a reader means the whole seed outran that reader's bare read.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from bench.core import Context, Figure, workload
from ledger_assets.lib.lake.layout import LakeLayout
from ledger_assets.lib.lake.snapshot import snapshot_table
from ledger_assets.lib.lake.sync import lake_tables, tenant_zones
from ledger_assets.lib.synth.load import SeedSpec, seed_database

TABLES = ("stripe_charges", "stripe_balance_transactions")
RUNS = 2


def _url(dsn: str) -> str:
    """The DSN as a ``postgresql://`` URL (ConnectorX and ADBC take no libpq conninfo)."""
    p = {k: quote(str(v), safe="") for k, v in conninfo_to_dict(dsn).items()}
    return (
        f"postgresql://{p.get('user', '')}:{p.get('password', '')}@{p.get('host', 'localhost')}"
        f":{p.get('port', 5432)}/{p.get('dbname', '')}"
    )


def _pandas(dsn: str, table: str) -> int:
    import pandas as pd

    with psycopg.connect(dsn) as conn, warnings.catch_warnings():
        # pandas warns that it only tests SQLAlchemy connectables; a DBAPI2 psycopg
        # connection is what a script without SQLAlchemy passes.
        warnings.simplefilter("ignore", UserWarning)
        frame = pd.read_sql(f"select * from ledger.{table}", conn)  # noqa: S608
    return len(frame)


def _adbc(dsn: str, table: str) -> int:
    import adbc_driver_postgresql.dbapi as adbc

    with adbc.connect(_url(dsn)) as conn, conn.cursor() as cur:
        cur.execute(f"select * from ledger.{table}")  # noqa: S608
        return int(cur.fetch_arrow_table().num_rows)


def _connectorx(dsn: str, table: str) -> int:
    import connectorx as cx

    arrow = cx.read_sql(
        _url(dsn),
        f"select * from ledger.{table}",  # noqa: S608
        return_type="arrow",
        partition_on="tenant_id",
        partition_num=2,
    )
    return int(arrow.num_rows)


def _drain_copy(dsn: str, source: sql.Composable) -> int:
    """Rows of ``COPY <source> TO STDOUT (FORMAT binary)``, read through psycopg and dropped."""
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        statement = sql.SQL("copy {} to stdout (format binary)").format(source)
        with cur.copy(statement) as copy:
            for _ in copy:
                pass
        return cur.rowcount


def _raw_copy(dsn: str, table: str) -> int:
    return _drain_copy(dsn, sql.Identifier("ledger", table))


def _server_only_copy(dsn: str, table: str) -> int:
    """``COPY ... TO '/dev/null'`` run by the server itself (superuser): no client and no
    network at all, one backend. The most any reader of this table can get from one
    connection; the snapshot also has to receive and decode the rows on the same two cores."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        statement = sql.SQL("copy {} to '/dev/null' (format binary)").format(
            sql.Identifier("ledger", table)
        )
        return conn.execute(statement).rowcount


def _raw_copy_narrow(dsn: str, table: str) -> int:
    """Raw binary COPY of four small columns only: how the rate depends on row width."""
    narrow = sql.SQL("(select tenant_id, amount, currency, created from {})").format(
        sql.Identifier("ledger", table)
    )
    return _drain_copy(dsn, narrow)


def _best_rate(read: Callable[[str, str], int], dsn: str) -> float:
    """Rows/s over ``TABLES``, best of ``RUNS``."""
    best = float("inf")
    rows = 0
    for _ in range(RUNS):
        began = time.perf_counter()
        rows = sum(read(dsn, table) for table in TABLES)
        best = min(best, time.perf_counter() - began)
    return rows / best


@workload("snapshot")
def snapshot(ctx: Context) -> list[Figure]:
    opts = ctx.options
    spec = SeedSpec(
        seed=opts.seed,
        tenants=opts.tenants,
        days=max(1, round(opts.years * 365)),
        target_rows=opts.rows,
    )
    folder = Path(tempfile.mkdtemp(prefix="bench-snapshot-"))
    try:
        with ctx.fresh_database("snapshot") as dsn:
            seed_database(dsn, spec)
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("vacuum analyze")
                tables = lake_tables(conn)
                zones = tenant_zones(conn)
            snap_rows, snap_s, days = 0, float("inf"), 0
            for run in range(RUNS):
                layout = LakeLayout(folder / f"lake{run}")
                began = time.perf_counter()
                reports = [snapshot_table(dsn, layout, tables[t], zones) for t in TABLES]
                snap_s = min(snap_s, time.perf_counter() - began)
                snap_rows = sum(r.rows for r in reports)
                days = max(r.days for r in reports)
                shutil.rmtree(layout.root)
            snap = snap_rows / snap_s
            rates = {
                "raw binary COPY (no decode)": _best_rate(_raw_copy, dsn),
                "server-only COPY to /dev/null": _best_rate(_server_only_copy, dsn),
                "raw binary COPY, 4 narrow columns": _best_rate(_raw_copy_narrow, dsn),
                "ConnectorX, 2 conns": _best_rate(_connectorx, dsn),
                "ADBC": _best_rate(_adbc, dsn),
                "pandas.read_sql": _best_rate(_pandas, dsn),
            }
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return [
        Figure("rows snapshotted (2 tables)", snap_rows, "rows"),
        Figure("local days (files per table)", days, "days"),
        Figure("rows per day file", snap_rows / len(TABLES) / max(days, 1), "rows"),
        *(
            Figure(f"snapshot rows/s vs {name}", snap, "rows/s", rate)
            for name, rate in rates.items()
        ),
    ]
