"""Seed (or re-seed) a lake table from Postgres: a base file per local day, read-only on the source.

DuckDB's postgres scanner reads the table with ``COPY ... TO STDOUT (FORMAT binary)`` in
parallel CTID ranges under one exported snapshot: no writes, no temporary tables, no locks
beyond ACCESS SHARE on the source. The same query gives each row its local day and orders the
rows by day, tenant and key (DuckDB's sort spills to disk, so memory stays bounded); the ordered
Arrow batches are cut at day changes and each day is written once, by pyarrow, with the writer
settings of every other lake file (``store.parquet_bytes``), on a small pool of writer threads.

Why not DuckDB's ``COPY ... PARTITION_BY``: at one file per day it spent most of a snapshot
opening, flushing and merging per-day files (several per day, merged again afterwards), and the
per-row ``timezone(<zone column>, ts)`` re-resolved an ICU zone for every row. Here each zone is
a bound constant of its own ``CASE`` branch: still ICU, so a snapshot row gets exactly the day
that the CDC apply computes for the same row (both use ``localday.local_date_sql``).

Replacing a table: the day files are written in place under their fixed names (each one
atomically), then every other file of the table (days that no longer exist, overlays, versions)
is deleted. An S3 prefix cannot be renamed, so this is how a snapshot replaces a table on both
kinds of storage; what commits it is ``lake.json``: ``sync.seed_lake`` marks a seeded lake as
seeding before the first table is touched and records the new seeding position after the last,
and nothing reads a seeding lake as consistent (reconciliation skips it, the marts refuse it).

Consistency with CDC: the capture slot must exist before the snapshot starts. Every change
committed after the snapshot's view is then in the slot, and every change before it is in the
snapshot; re-applying changes that the snapshot already holds converges to the same rows
because each change carries a whole row image. The table counts as seeded once the CDC apply
has passed ``consistent_lsn`` (the WAL position read after the snapshot finished).
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta

import duckdb
import duckdb_extension_postgres_scanner
import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from ledger_assets.lib.lake.layout import LakeLayout
from ledger_assets.lib.lake.localday import ZONE_CODE, local_date_sql, zone_codes
from ledger_assets.lib.lake.schema import LOCAL_DATE, ROW_LSN, LakeTable
from ledger_assets.lib.lake.storage import wheel_extension
from ledger_assets.lib.lake.store import parquet_bytes
from ledger_assets.lib.sor.catalog import SCHEMA


@dataclass(frozen=True)
class SnapshotReport:
    table: str
    rows: int
    days: int
    seconds: float
    #: A WAL position at or after everything the snapshot saw.
    consistent_lsn: str


def postgres_scanner(dsn: str) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the Postgres source attached read-only as ``pg``.

    The extension is loaded from its PyPI wheel (no run-time download), and the connection
    details go through a secret built from bound parameters, never through SQL text.
    """
    con = duckdb.connect()
    con.install_extension(
        wheel_extension(duckdb_extension_postgres_scanner.__file__, "postgres_scanner")
    )
    con.load_extension("postgres_scanner")
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    con.execute(
        "create temporary secret ledger_pg (type postgres, host ?, port ?, user ?, password ?, "
        "database ?)",
        [
            str(params.get("host", "localhost")),
            int(str(params.get("port", 5432))),
            str(params.get("user", "")),
            str(params.get("password", "")),
            str(params.get("dbname", "")),
        ],
    )
    con.execute("attach '' as pg (type postgres, read_only, secret ledger_pg)")
    con.execute("set TimeZone = 'UTC'")
    return con


#: Rows per Arrow batch fetched from DuckDB: large enough to amortise per-batch work, small
#: enough that a dense day is a handful of batches.
FETCH_ROWS = 65_536
#: Day files being written at once. pyarrow's writer holds no GIL while encoding and
#: compressing, so two writers overlap with each other and with DuckDB handing over the next
#: sorted batches (not with the scan: the ORDER BY has read every row before the first batch).
WRITERS = 2


def _select_columns(lake_table: LakeTable) -> str:
    columns = []
    for field in lake_table.source:
        name = f"t.{field.name}"
        # JSON arrives as DuckDB's JSON type; the lake keeps it as plain text.
        columns.append(
            f"cast({name} as varchar) as {field.name}" if field.type == pa.string() else name
        )
    return ", ".join(columns)


def _day_runs(batch: pa.RecordBatch) -> list[tuple[date, int, int]]:
    """(day, offset, length) of each run of one day in ``batch`` (ordered by day)."""
    days = batch.column(LOCAL_DATE).cast(pa.int32()).to_numpy()
    if len(days) == 0:
        return []
    starts = np.flatnonzero(np.diff(days)) + 1
    bounds = [0, *starts.tolist(), len(days)]
    epoch = date(1970, 1, 1)
    return [
        (epoch + timedelta(days=int(days[lo])), lo, hi - lo)
        for lo, hi in itertools.pairwise(bounds)
    ]


class _DayWriter:
    """Writes each day's batches as that day's ``data.parquet``, a few days at a time."""

    def __init__(self, layout: LakeLayout, lake_table: LakeTable) -> None:
        self._layout, self._table, self._schema = layout, lake_table.name, lake_table.schema
        self._pool = ThreadPoolExecutor(WRITERS, thread_name_prefix="snapshot-write")
        self._pending: deque[Future[None]] = deque()
        self.days = 0
        #: The files written (their filesystem paths).
        self.written: set[str] = set()

    def write(self, day: date, batches: list[pa.RecordBatch]) -> None:
        # Bound the days held in memory: wait for the oldest write before queueing more.
        while len(self._pending) >= 2 * WRITERS:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._write, day, batches))
        self.days += 1

    def _write(self, day: date, batches: list[pa.RecordBatch]) -> None:
        path = self._layout.base_file(self._table, day)
        table = pa.Table.from_batches(batches).cast(self._schema)
        # Not fsynced one by one: the seed is committed by lake.json, written durably after.
        path.write_bytes(parquet_bytes(table), durable=False)
        self.written.add(path.path)

    def close(self) -> None:
        """Wait for every write; re-raises the first failure."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(cancel_futures=True)


def _write_days(
    reader: pa.RecordBatchReader, writer: _DayWriter, known: pa.Array, table: str
) -> int:
    """Cut the ordered batches at day changes into ``writer``; returns the rows read."""
    rows = 0
    day: date | None = None
    held: list[pa.RecordBatch] = []
    for batch in reader:
        if batch.column(LOCAL_DATE).null_count:
            tenants = pc.filter(batch.column("tenant_id"), pc.is_null(batch.column(LOCAL_DATE)))
            missing = sorted(
                set(pc.filter(tenants, pc.invert(pc.is_in(tenants, known))).to_pylist())
            )
            raise LookupError(f"{table}: tenants without a time zone: {missing}")
        rows += batch.num_rows
        for run_day, offset, length in _day_runs(batch):
            if run_day != day and held:
                assert day is not None
                writer.write(day, held)
                held = []
            day = run_day
            held.append(batch.slice(offset, length))
    if held:
        assert day is not None
        writer.write(day, held)
    return rows


def snapshot_table(
    dsn: str, layout: LakeLayout, lake_table: LakeTable, zones: Mapping[int, str]
) -> SnapshotReport:
    """Replace every file of ``lake_table`` with a fresh snapshot of its Postgres rows."""
    started = time.monotonic()
    spec = lake_table.spec
    day, params = local_date_sql(lake_table, zones, "t", f"z.{ZONE_CODE}")
    layout.local.mkdir(parents=True, exist_ok=True)
    # The ORDER BY may spill: on this host's disk (for a local lake, next to its files).
    spill = tempfile.TemporaryDirectory(prefix=f".{lake_table.name}.spill-", dir=layout.local)
    con = postgres_scanner(dsn)
    writer = _DayWriter(layout, lake_table)
    try:
        con.register("zones", zone_codes(zones))
        con.execute("set temp_directory = ?", [spill.name])
        reader = con.execute(
            f"select {_select_columns(lake_table)}, {day} as {LOCAL_DATE}, "  # noqa: S608
            f"0::bigint as {ROW_LSN} from pg.{SCHEMA}.{spec.name} t "
            "left join zones z on z.tenant_id = t.tenant_id "
            f"order by {LOCAL_DATE}, t.tenant_id, t.{spec.primary_key}",
            params,
        ).to_arrow_reader(FETCH_ROWS)
        known = pa.array(list(zones), pa.int32())
        rows = _write_days(reader, writer, known, lake_table.name)
    finally:
        writer.close()
        con.close()
        spill.cleanup()
    with psycopg.connect(dsn) as conn:
        lsn_row = conn.execute("select pg_current_wal_lsn()::text").fetchone()
    assert lsn_row is not None
    # Overlays, versions and days of the old table must not outlive the new base files.
    keep = writer.written | {str(layout.lock_file(lake_table.name))}
    for path in layout.table_dir(lake_table.name).files():
        if path.path not in keep:
            path.unlink()
    return SnapshotReport(
        lake_table.name, rows, writer.days, time.monotonic() - started, str(lsn_row[0])
    )
