"""Get the marts DuckDB database ready for a dbt run: lake views, reference tables, results.

dbt reads three schemas of the marts database, all (re)created here before every run:

* ``lake`` — one view per lake table over the lake's *current* files, with the overlay
  semantics of :func:`ledger_assets.lib.lake.reader.create_lake_view` (an overlay file
  supersedes its tenant's slice of the day's base file). A view captures the file list when it
  is created, so it must be recreated before each run. ``create_lake_view`` itself cannot be
  used for a database that another process (dbt) reads: it registers two Arrow objects on its
  own connection, and those vanish when that connection closes. These views keep the same two
  relations as real (tiny) tables instead.
* ``sor`` — copies of the small system-of-record tables the marts need and the lake does not
  hold, because they are not day-partitioned: tenants (zone, default currency), Plaid accounts
  (name, type) and currencies (exponents). Read in one Postgres transaction (one snapshot).
* ``reconciliation`` — ``results``: the rows the reconciliation check writes (see
  :mod:`ledger_assets.lib.marts.contracts`), or an empty table of the same shape when the check
  has not run yet, so the reconciliation-status mart is empty rather than broken.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import LiteralString

import duckdb
import psycopg
import pyarrow as pa

from ledger_assets.lib.lake.layout import LakeLayout
from ledger_assets.lib.lake.reader import sql_list
from ledger_assets.lib.lake.schema import LakeTable
from ledger_assets.lib.lake.sync import read_lake_state
from ledger_assets.lib.marts.contracts import RECONCILIATION_RESULTS, result_files

LAKE_SCHEMA = "lake"
SOR_SCHEMA = "sor"
RECONCILIATION_SCHEMA = "reconciliation"

#: The reference tables copied from Postgres: name -> select list (ledger schema, fixed text).
SOR_TABLES: Mapping[str, LiteralString] = {
    "tenants": "select tenant_id, name, time_zone, default_currency, created_at "
    "from ledger.tenants order by tenant_id",
    "plaid_accounts": "select account_id, tenant_id, item_id, name, official_name, mask, type, "
    "subtype, currency from ledger.plaid_accounts order by account_id",
    "currencies": "select code, exponent from ledger.currencies order by code",
}

_SOR_TYPES: Mapping[str, pa.Schema] = {
    "tenants": pa.schema(
        [
            ("tenant_id", pa.int32()),
            ("name", pa.string()),
            ("time_zone", pa.string()),
            ("default_currency", pa.string()),
            ("created_at", pa.timestamp("us", tz="UTC")),
        ]
    ),
    "plaid_accounts": pa.schema(
        [
            ("account_id", pa.string()),
            ("tenant_id", pa.int32()),
            ("item_id", pa.string()),
            ("name", pa.string()),
            ("official_name", pa.string()),
            ("mask", pa.string()),
            ("type", pa.string()),
            ("subtype", pa.string()),
            ("currency", pa.string()),
        ]
    ),
    "currencies": pa.schema([("code", pa.string()), ("exponent", pa.int16())]),
}


class LakeNotReadyError(RuntimeError):
    """The lake is not seeded, or still seeding: marts built now would be silently wrong."""


@dataclass
class PreparedDatabase:
    """What :func:`prepare_marts_database` did."""

    lake_files: dict[str, int] = field(default_factory=dict)
    sor_rows: dict[str, int] = field(default_factory=dict)
    reconciliation_files: int = 0
    applied_lsn: str | None = None
    seconds: float = 0.0


def check_lake_ready(layout: LakeLayout) -> str:
    """The lake's replication watermark; raises unless the lake is seeded and consistent.

    An absent file for a (tenant, day) in a seeded lake means "no rows in Postgres as of the
    watermark", which the marts show as an explicit zero row. Before seeding completes the same
    absence could mean "not copied yet", so the marts refuse to build.

    Raises:
        LakeNotReadyError: the lake has no state file, or it is still seeding.
    """
    state = read_lake_state(layout)
    if state.applied_end is None:
        raise LakeNotReadyError(
            f"the lake at {layout.root} is not seeded (no _state/lake.json): "
            "run the lake seed first; marts over a missing lake would show zeros"
        )
    if state.seeding:
        raise LakeNotReadyError(
            f"the lake at {layout.root} is still seeding (applied to {state.applied_end}, "
            f"consistent from {state.seeded_lsn}): wait for CDC to catch up"
        )
    return str(state.applied_end)


def _quoted(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a plain identifier: {name!r}")
    return f'"{name}"'


def create_persistent_lake_view(
    con: duckdb.DuckDBPyConnection, layout: LakeLayout, lake_table: LakeTable, schema: str
) -> int:
    """Create ``<schema>.<table>`` over the table's current files; returns the file count."""
    table = _quoted(lake_table.name)
    sch = _quoted(schema)
    hidden = _quoted(f"_overlaid_{lake_table.name}")
    empty = _quoted(f"_empty_{lake_table.name}")
    keys = layout.overlay_keys(lake_table.name)
    con.register(
        "_keys",
        pa.table(
            {
                "tenant_id": pa.array([k.tenant_id for k in keys], pa.int32()),
                "local_date": pa.array([k.local_date for k in keys], pa.date32()),
            }
        ),
    )
    con.register("_empty", lake_table.schema.empty_table())
    try:
        # Identifiers checked by _quoted; no values are formatted into these statements.
        con.execute(f"create or replace table {sch}.{hidden} as select * from _keys")  # noqa: S608
        con.execute(f"create or replace table {sch}.{empty} as select * from _empty")  # noqa: S608
    finally:
        con.unregister("_keys")
        con.unregister("_empty")
    bases = [str(p) for p in layout.base_files(lake_table.name)]
    overlays = [str(p) for p in layout.overlay_files(lake_table.name)]
    # hive_partitioning off: DuckDB would otherwise read tenant_id from overlay paths
    # (tenant_id=<t>/...) as BIGINT instead of the files' INTEGER column, and the types of
    # the view would change with the mere presence of an overlay.
    base_sql = (
        f"select b.* from read_parquet({sql_list(bases)}, hive_partitioning = false) b "  # noqa: S608
        f"anti join {sch}.{hidden} h using (tenant_id, local_date)"
        if bases
        else f"select * from {sch}.{empty}"  # noqa: S608 - a fixed identifier
    )
    overlay_sql = (
        f"select * from read_parquet({sql_list(overlays)}, hive_partitioning = false)"  # noqa: S608
        if overlays
        else f"select * from {sch}.{empty}"  # noqa: S608 - a fixed identifier
    )
    con.execute(
        f"create or replace view {sch}.{table} as {base_sql} union all by name {overlay_sql}"
    )
    return len(bases) + len(overlays)


def _copy_sor_tables(con: duckdb.DuckDBPyConnection, dsn: str, schema: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    with psycopg.connect(dsn) as pg, pg.transaction():
        # One snapshot for all reference tables.
        pg.execute("set transaction isolation level repeatable read, read only")
        for name, query in SOR_TABLES.items():
            with pg.cursor() as cur:
                cur.execute(query)
                rows = cur.fetchall()
            arrow_schema = _SOR_TYPES[name]
            data = pa.Table.from_pylist(
                [dict(zip(arrow_schema.names, row, strict=True)) for row in rows],
                schema=arrow_schema,
            )
            con.register("_sor", data)
            try:
                con.execute(
                    f"create or replace table {_quoted(schema)}.{_quoted(name)} as "  # noqa: S608
                    "select * from _sor"
                )
            finally:
                con.unregister("_sor")
            counts[name] = data.num_rows
    return counts


def create_reconciliation_view(con: duckdb.DuckDBPyConnection, results_dir: Path) -> int:
    """``reconciliation.results`` over the check's result files (empty when there are none)."""
    sch = _quoted(RECONCILIATION_SCHEMA)
    con.register("_empty", RECONCILIATION_RESULTS.empty_table())
    try:
        con.execute(f"create or replace table {sch}._empty_results as select * from _empty")  # noqa: S608
    finally:
        con.unregister("_empty")
    files = [str(p) for p in result_files(results_dir)]
    if files:
        # union_by_name: files written by older check versions may lack newer optional columns.
        body = (
            f"select * from {sch}._empty_results union all by name "  # noqa: S608
            f"select * from read_parquet({sql_list(files)}, union_by_name = true, "
            "hive_partitioning = false)"
        )
    else:
        body = f"select * from {sch}._empty_results"  # noqa: S608 - a fixed identifier
    con.execute(f"create or replace view {sch}.results as {body}")
    return len(files)


def prepare_marts_database(
    database: Path,
    layout: LakeLayout,
    tables: Mapping[str, LakeTable],
    dsn: str,
    results_dir: Path,
) -> PreparedDatabase:
    """Recreate the ``lake``, ``sor`` and ``reconciliation`` relations dbt reads.

    Args:
        database: the marts DuckDB file (created if missing).
        layout: the lake.
        tables: the lake tables (``sync.lake_tables``).
        dsn: the system of record, for the reference tables.
        results_dir: where the reconciliation check writes its result files.

    Raises:
        LakeNotReadyError: the lake is not seeded or still seeding.
    """
    started = time.monotonic()
    report = PreparedDatabase(applied_lsn=check_lake_ready(layout))
    database.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(database))
    try:
        for schema in (LAKE_SCHEMA, SOR_SCHEMA, RECONCILIATION_SCHEMA):
            con.execute(f"create schema if not exists {_quoted(schema)}")
        con.execute("begin")
        for name, lake_table in tables.items():
            report.lake_files[name] = create_persistent_lake_view(
                con, layout, lake_table, LAKE_SCHEMA
            )
        report.sor_rows = _copy_sor_tables(con, dsn, SOR_SCHEMA)
        report.reconciliation_files = create_reconciliation_view(con, results_dir)
        con.execute("commit")
    finally:
        con.close()
    report.seconds = time.monotonic() - started
    return report
