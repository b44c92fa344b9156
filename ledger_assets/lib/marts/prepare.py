"""Get the marts DuckDB database ready for a dbt run: lake views, reference tables, results.

dbt reads three schemas of the marts database, all (re)created here before every run:

* ``lake`` — one view per lake table over the lake's *current* files, with the overlay
  semantics of :func:`ledger_assets.lib.lake.reader.create_lake_view` (an overlay file
  supersedes its tenant's slice of the day's base file). A view captures the file list when it
  is created, so it must be recreated before each run. It lists *pins* of those files
  (:mod:`ledger_assets.lib.lake.pins`), taken under each table's writer lock: CDC replaces
  files in place while dbt reads for seconds to minutes, and DuckDB reading a file replaced
  mid-query fails or returns torn rows. The pins last until the database is prepared again.
  ``create_lake_view`` itself cannot be used for a database that another process (dbt)
  reads: it registers two Arrow objects on its own connection, and those vanish when that
  connection closes. These views keep the same two relations as real (tiny) tables instead.
  ``lake._scope`` records which days they cover.
* For a windowed run (:class:`BuildWindow`, the dbt vars ``start_date``/``end_date``) each view
  lists only the files of the days the run reads, so a one-day build costs the same whatever
  the lake's length: a query over a view of every day's file opens ~1,100 Parquet footers for
  three years (0.15-0.4 s per query, ~100 queries per build), a one-day view a handful. Besides
  the window's days, a view also lists the days the window's rows reach (:func:`reach_days`):
  the charge days of the window's disputes (their cohorts are rebuilt) and refunds (their
  charges must exist), every dispute of those cohorts, the balance transactions the window's
  payouts swept, and the payouts the window's balance transactions were swept into. Those days
  are looked up by primary key or index in Postgres, so the cost follows the window's rows, not
  the lake.
* With ``as_of`` (the lake watermark a published report was built from), each view reads the
  lake as readers at that watermark saw it: a partition replaced since is read from its kept
  version (:func:`ledger_assets.lib.lake.versions.versions_as_of`, the selection
  ``create_lake_view_as_of`` makes), every other one from its current file. A position older
  than the versions still kept fails (``VersionExpiredError``) instead of mixing in newer rows.
* ``sor`` — copies of the small system-of-record tables the marts need and the lake does not
  hold, because they are not day-partitioned: tenants (zone, default currency), Plaid accounts
  (name, type) and currencies (exponents). Read in one Postgres transaction (one snapshot).
* ``reconciliation`` — ``results``: the rows the reconciliation check writes (see
  :mod:`ledger_assets.lib.marts.contracts`), or an empty table of the same shape when the check
  has not run yet, so the reconciliation-status mart is empty rather than broken.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import LiteralString

import duckdb
import psycopg
import pyarrow as pa

from ledger_assets.lib.cdc.lsn import Lsn
from ledger_assets.lib.lake.layout import LakeLayout, PartitionKey
from ledger_assets.lib.lake.pins import PinSet
from ledger_assets.lib.lake.reader import READ_OPTIONS, lake_view_query, sql_list
from ledger_assets.lib.lake.schema import LakeTable
from ledger_assets.lib.lake.storage import LakePath
from ledger_assets.lib.lake.sync import read_lake_state
from ledger_assets.lib.lake.versions import VersionExpiredError, versions_as_of
from ledger_assets.lib.localtime import day_window, local_date
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


@dataclass(frozen=True)
class BuildWindow:
    """The account-local days ``[start, end)`` a windowed run rebuilds (end exclusive)."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"an empty build window: {self.start} .. {self.end}")

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=d) for d in range((self.end - self.start).days)]


class LakeNotReadyError(RuntimeError):
    """The lake is not seeded, or still seeding: marts built now would be silently wrong."""


@dataclass
class PreparedDatabase:
    """What :func:`prepare_marts_database` did."""

    lake_files: dict[str, int] = field(default_factory=dict)
    sor_rows: dict[str, int] = field(default_factory=dict)
    reconciliation_files: int = 0
    #: The lake watermark the views reflect: the lake's, or the ``as_of`` position.
    applied_lsn: str | None = None
    #: The lake's seeding snapshot position: what a snapshot row (``_lsn`` 0) reflects.
    seeded_lsn: str | None = None
    #: None: the views cover the whole lake.
    window: BuildWindow | None = None
    #: Per lake table, the days outside the window its view also covers (windowed runs).
    reach_days: dict[str, int] = field(default_factory=dict)
    #: Per lake table, the partitions read from a kept version (``as_of`` runs).
    versions_read: dict[str, int] = field(default_factory=dict)
    #: The lake files the views read (``lib/lake/pins.py``): kept until the database is
    #: prepared again; a reader done with the database earlier may release them.
    pins: PinSet | None = None
    seconds: float = 0.0


def check_lake_ready(layout: LakeLayout) -> tuple[str, str]:
    """The lake's replication watermark and seeding position; raises unless the lake is seeded
    and consistent.

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
    return str(state.applied_end), str(state.seeded_lsn)


def _quoted(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a plain identifier: {name!r}")
    return f'"{name}"'


def create_persistent_lake_view(
    con: duckdb.DuckDBPyConnection,
    pins: PinSet,
    lake_table: LakeTable,
    schema: str,
    days: Collection[date] | None = None,
    versions: Mapping[PartitionKey, LakePath] | None = None,
) -> int:
    """Create ``<schema>.<table>`` over the table's current files; returns the file count.

    The view of :func:`ledger_assets.lib.lake.reader.create_lake_view` (same files, same
    query), with its two helper relations stored as tables in ``schema``, so that another
    process (dbt) can read it. It reads the files through ``pins``, so CDC replacing one of
    them while dbt reads cannot tear a query. ``days`` and ``versions``: see
    ``reader.lake_files``.
    """
    files = pins.lake_files(lake_table.name, days, versions)
    sch = _quoted(schema)
    superseded = f"{sch}.{_quoted(f'_overlaid_{lake_table.name}')}"
    empty = f"{sch}.{_quoted(f'_empty_{lake_table.name}')}"
    con.register("_keys", files.superseded_keys())
    con.register("_empty", lake_table.schema.empty_table())
    try:
        # Identifiers checked by _quoted; no values are formatted into these statements.
        con.execute(f"create or replace table {superseded} as select * from _keys")  # noqa: S608
        con.execute(f"create or replace table {empty} as select * from _empty")  # noqa: S608
    finally:
        con.unregister("_keys")
        con.unregister("_empty")
    query = lake_view_query(files, lake_table, superseded, empty)
    con.execute(f"create or replace view {sch}.{_quoted(lake_table.name)} as {query}")
    return files.count


def _copy_sor_tables(
    con: duckdb.DuckDBPyConnection, pg: psycopg.Connection[tuple[object, ...]], schema: str
) -> dict[str, int]:
    counts: dict[str, int] = {}
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


def _ids(con: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
    return [str(r[0]) for r in con.execute(sql).fetchall() if r[0] is not None]


def _days_of(
    pg: psycopg.Connection[tuple[object, ...]],
    sql: LiteralString,
    params: tuple[object, ...],
    zones: Mapping[int, str],
) -> set[tuple[int, date]]:
    """The (tenant, account-local day of ``created``) of the rows ``sql`` returns: the lake's
    own partitioning rule for Stripe objects. ``sql`` selects ``tenant_id, created``."""
    rows = pg.execute(sql, params).fetchall()
    out: set[tuple[int, date]] = set()
    for tenant, created in rows:
        assert isinstance(tenant, int)
        assert isinstance(created, datetime)
        out.add((tenant, local_date(created, zones[tenant])))
    return out


def reach_days(
    con: duckdb.DuckDBPyConnection,
    pg: psycopg.Connection[tuple[object, ...]],
    schema: str,
    window: BuildWindow,
    zones: Mapping[int, str],
) -> tuple[set[date], dict[str, set[date]]]:
    """The days outside ``window`` that a windowed build reads: of every lake table, and per
    Stripe lake table.

    Every table: the charge days of the window's disputes, whose cohorts (and source
    positions) the run rebuilds in full. Per table: the charge days of the window's refunds,
    every dispute of a rebuilt cohort, the balance transactions the window's payouts swept,
    and the payouts the window's balance transactions went into. ``schema`` holds the
    window-only lake views; ids are read from them, and the days of the rows they point to come
    from Postgres by primary key or index (``created`` never changes, so Postgres being ahead
    of the lake adds at most a harmless extra day).
    """
    sch = _quoted(schema)
    # Identifier checked by _quoted; fixed column names.
    dispute_charges = _ids(con, f"select distinct charge from {sch}.stripe_disputes")  # noqa: S608
    refund_charges = _ids(con, f"select distinct charge from {sch}.stripe_refunds")  # noqa: S608
    payouts = _ids(con, f"select id from {sch}.stripe_payouts")  # noqa: S608
    swept_into = _ids(
        con,
        f"select distinct payout from {sch}.stripe_balance_transactions",  # noqa: S608
    )
    charge_days = "select tenant_id, created from ledger.stripe_charges where id = any(%s)"
    cohorts = _days_of(pg, charge_days, (dispute_charges,), zones)
    refunded = _days_of(pg, charge_days, (refund_charges,), zones)
    # Every dispute of a rebuilt cohort (the window's own charge days, and the cohorts of the
    # window's disputes), whenever it was created: the cohort's row counts all of them.
    spans = [
        (tenant, *day_window(day, zones[tenant]))
        for tenant, day in sorted(cohorts | {(t, d) for t in zones for d in window.days})
    ]
    cohort_disputes = _days_of(
        pg,
        "select d.tenant_id, d.created from ledger.stripe_disputes d "
        "join ledger.stripe_charges c on c.id = d.charge "
        "join unnest(%s::int[], %s::timestamptz[], %s::timestamptz[]) as w(tenant_id, lo, hi) "
        "on c.tenant_id = w.tenant_id and c.created >= w.lo and c.created < w.hi",
        ([s[0] for s in spans], [s[1] for s in spans], [s[2] for s in spans]),
        zones,
    )
    swept = _days_of(
        pg,
        "select tenant_id, created from ledger.stripe_balance_transactions where payout = any(%s)",
        (payouts,),
        zones,
    )
    payout_days = _days_of(
        pg, "select tenant_id, created from ledger.stripe_payouts where id = any(%s)",
        (swept_into,), zones,
    )  # fmt: skip
    inside = set(window.days)

    def outside(pairs: Iterable[tuple[int, date]]) -> set[date]:
        return {day for _, day in pairs} - inside

    return outside(cohorts), {
        "stripe_charges": outside(refunded),
        "stripe_disputes": outside(cohort_disputes),
        "stripe_balance_transactions": outside(swept),
        "stripe_payouts": outside(payout_days),
    }


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
        # Union by name: files written by older check versions may lack newer optional columns.
        body = (
            f"select * from {sch}._empty_results union all by name "  # noqa: S608
            f"select * from read_parquet({sql_list(files)}, {READ_OPTIONS})"
        )
    else:
        body = f"select * from {sch}._empty_results"  # noqa: S608 - a fixed identifier
    con.execute(f"create or replace view {sch}.results as {body}")
    return len(files)


SCOPE_TABLE = "_scope"


def _write_scope(con: duckdb.DuckDBPyConnection, window: BuildWindow | None) -> None:
    """``lake._scope``: the window the views cover (nulls: everything), for dbt's guard."""
    con.execute(
        f"create or replace table {_quoted(LAKE_SCHEMA)}.{_quoted(SCOPE_TABLE)} "
        "(start_date date, end_date date)"
    )
    con.execute(
        f"insert into {_quoted(LAKE_SCHEMA)}.{_quoted(SCOPE_TABLE)} values (?, ?)",  # noqa: S608
        [window.start if window else None, window.end if window else None],
    )


def prepare_marts_database(
    database: Path,
    layout: LakeLayout,
    tables: Mapping[str, LakeTable],
    dsn: str,
    results_dir: Path,
    window: BuildWindow | None = None,
    as_of: Lsn | None = None,
) -> PreparedDatabase:
    """Recreate the ``lake``, ``sor`` and ``reconciliation`` relations dbt reads.

    Args:
        database: the marts DuckDB file (created if missing).
        layout: the lake.
        tables: the lake tables (``sync.lake_tables``).
        dsn: the system of record, for the reference tables.
        results_dir: where the reconciliation check writes its result files.
        window: the days a windowed dbt run rebuilds; the lake views then cover those days and
            the days they reach (see the module's docs). None: the whole lake (a full build).
            dbt refuses a run whose vars ask for more than the views cover.
        as_of: read the lake as of this watermark (a published report's ``source_lsn``)
            instead of its current files. The reference tables are still read as they are now.

    Raises:
        LakeNotReadyError: the lake is not seeded or still seeding, or has not reached
            ``as_of`` yet.
        VersionExpiredError: ``as_of`` is older than the versions still kept, or than the
            lake's seed (nothing is kept while it seeds).
    """
    started = time.monotonic()
    applied, seeded = check_lake_ready(layout)
    versions: dict[str, dict[PartitionKey, LakePath]] = {}
    if as_of is not None:
        if as_of > Lsn.parse(applied):
            raise LakeNotReadyError(
                f"the lake is at {applied}, not yet at {as_of}: its files may still change "
                "below that position"
            )
        if as_of < Lsn.parse(seeded):
            raise VersionExpiredError(
                f"{as_of} is before the lake's seed ({seeded}): no report can have read it"
            )
        versions = {name: versions_as_of(layout, name, as_of) for name in tables}
        applied = str(as_of)
    report = PreparedDatabase(
        applied_lsn=applied, seeded_lsn=seeded, window=window,
        versions_read={name: len(kept) for name, kept in versions.items()},
    )  # fmt: skip
    database.parent.mkdir(parents=True, exist_ok=True)
    pins = PinSet.create(layout, str(database.resolve()))
    con = duckdb.connect(str(database))
    try:
        # An S3 lake's views are read with httpfs; dbt's own connections get the same secret
        # from the profile's plugin (lib/marts/duckdb_plugin.py).
        layout.path.configure_duckdb(con)
        for schema in (LAKE_SCHEMA, SOR_SCHEMA, RECONCILIATION_SCHEMA):
            con.execute(f"create schema if not exists {_quoted(schema)}")
        con.execute("begin")
        with psycopg.connect(dsn) as pg, pg.transaction():
            # One snapshot for the reference tables and the reach look-ups.
            pg.execute("set transaction isolation level repeatable read, read only")
            report.sor_rows = _copy_sor_tables(con, pg, SOR_SCHEMA)
            days = None if window is None else set(window.days)
            for name, lake_table in tables.items():
                report.lake_files[name] = create_persistent_lake_view(
                    con, pins, lake_table, LAKE_SCHEMA, days, versions.get(name)
                )
            if window is not None:
                zones = {
                    int(str(r[0])): str(r[1])
                    for r in con.execute(
                        f"select tenant_id, time_zone from {_quoted(SOR_SCHEMA)}.tenants"  # noqa: S608
                    ).fetchall()
                }
                every, by_table = reach_days(con, pg, LAKE_SCHEMA, window, zones)
                for name, lake_table in tables.items():
                    extra = every | by_table.get(name, set())
                    report.reach_days[name] = len(extra)
                    if extra:
                        report.lake_files[name] = create_persistent_lake_view(
                            con, pins, lake_table, LAKE_SCHEMA, set(window.days) | extra,
                            versions.get(name),
                        )  # fmt: skip
        _write_scope(con, window)
        report.reconciliation_files = create_reconciliation_view(con, results_dir)
        con.execute("commit")
    except BaseException:
        pins.release()
        raise
    finally:
        con.close()
    # The views now read this set's pins only; the ones before read older sets.
    pins.release_others()
    report.pins = pins
    report.seconds = time.monotonic() - started
    return report
