"""Seed (or re-seed) a lake table from Postgres: a base file per local day, read-only on the source.

DuckDB's postgres scanner reads the table with ``COPY ... TO STDOUT (FORMAT binary)`` in
parallel CTID ranges under one exported snapshot: no writes, no temporary tables, no locks
beyond ACCESS SHARE on the source. The rows are written with ``COPY ... PARTITION_BY
(local_date)``, one base file per day, sorted by tenant and key.

Consistency with CDC: the capture slot must exist before the snapshot starts. Every change
committed after the snapshot's view is then in the slot, and every change before it is in the
snapshot; re-applying changes that the snapshot already holds converges to the same rows
because each change carries a whole row image. The table counts as seeded once the CDC apply
has passed ``consistent_lsn`` (the WAL position read after the snapshot finished).
"""

from __future__ import annotations

import glob
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import duckdb
import duckdb_extension_postgres_scanner
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from ledger_assets.lib.cdc.changelog import atomic_write_bytes
from ledger_assets.lib.lake.layout import DATA_FILE, LakeLayout
from ledger_assets.lib.lake.reader import sql_string
from ledger_assets.lib.lake.schema import LOCAL_DATE, ROW_LSN, LakeTable
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
    folder = Path(duckdb_extension_postgres_scanner.__file__).parent / "extensions"
    extension = glob.glob(str(folder / "*" / "postgres_scanner.duckdb_extension"))
    if not extension:
        raise FileNotFoundError(f"postgres_scanner extension not found under {folder}")
    con = duckdb.connect()
    con.install_extension(extension[0])
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


def _select_columns(lake_table: LakeTable) -> str:
    columns = []
    for field in lake_table.source:
        name = f"t.{field.name}"
        # JSON arrives as DuckDB's JSON type; the lake keeps it as plain text.
        columns.append(
            f"cast({name} as varchar) as {field.name}" if field.type == pa.string() else name
        )
    return ", ".join(columns)


def _one_file_per_day(base: Path, lake_table: LakeTable) -> int:
    """Leave exactly ``data.parquet`` in each day folder; returns the rows they hold.

    DuckDB's partitioned COPY may write several files into one partition folder (one per
    writer thread). They are merged, sorted by tenant and key like every base file, never
    renamed over each other.
    """
    total = 0
    for day in sorted(p for p in base.iterdir() if p.is_dir()):
        parts = sorted(day.glob("*.parquet"))
        if len(parts) == 1:
            parts[0].rename(day / DATA_FILE)
            total += pq.ParquetFile(day / DATA_FILE).metadata.num_rows
            continue
        table = pq.read_table([str(p) for p in parts], schema=lake_table.schema)
        table = table.sort_by(
            [("tenant_id", "ascending"), (lake_table.spec.primary_key, "ascending")]
        )
        atomic_write_bytes(day / DATA_FILE, parquet_bytes(table))
        for part in parts:
            part.unlink()
        total += table.num_rows
    return total


def snapshot_table(
    dsn: str, layout: LakeLayout, lake_table: LakeTable, zones: Mapping[int, str]
) -> SnapshotReport:
    """Replace every file of ``lake_table`` with a fresh snapshot of its Postgres rows."""
    started = time.monotonic()
    target = layout.table_dir(lake_table.name)
    staging = target.with_name(f".{target.name}.snapshot")
    shutil.rmtree(staging, ignore_errors=True)
    con = postgres_scanner(dsn)
    try:
        con.register(
            "zones",
            pa.table({"tenant_id": pa.array(list(zones), pa.int32()),
                      "time_zone": pa.array(list(zones.values()))}),
        )  # fmt: skip
        spec = lake_table.spec
        day = (
            f"t.{spec.day_column}"
            if spec.day_kind == "local_date"
            else f"cast(timezone(z.time_zone, t.{spec.day_column}) as date)"
        )
        missing = con.execute(
            f"select distinct t.tenant_id from pg.{SCHEMA}.{spec.name} t "  # noqa: S608
            "anti join zones z on z.tenant_id = t.tenant_id"
        ).fetchall()
        if missing:
            raise LookupError(f"{spec.name}: tenants without a time zone: {sorted(missing)}")
        (staging / "base").mkdir(parents=True)
        # One open file per day for the whole COPY: with DuckDB's default of 100 open files a
        # 3-year table (1,096 days) would be written as several files per day.
        con.execute("set partitioned_write_max_open_files = 100000")
        con.execute("set partitioned_write_flush_threshold = 10000000")
        # COPY returns the number of rows it wrote (none for an empty table: no files at all).
        rows = con.execute(
            f"copy (select {_select_columns(lake_table)}, {day} as {LOCAL_DATE}, "  # noqa: S608
            f"0::bigint as {ROW_LSN} from pg.{SCHEMA}.{spec.name} t "
            "join zones z on z.tenant_id = t.tenant_id "
            f"order by t.tenant_id, t.{spec.primary_key}) "
            f"to {sql_string(str(staging / 'base'))} (format parquet, partition_by ({LOCAL_DATE}), "
            "filename_pattern 'data', compression zstd, row_group_size 16384, "
            "write_partition_columns true)"
        ).fetchone()
    finally:
        con.close()
    written = _one_file_per_day(staging / "base", lake_table)
    copied = int(rows[0]) if rows else 0
    if written != copied:
        raise RuntimeError(
            f"snapshot of {lake_table.name}: COPY wrote {copied} rows but the day files hold "
            f"{written}; the lake was left unchanged"
        )
    with psycopg.connect(dsn) as conn:
        lsn_row = conn.execute("select pg_current_wal_lsn()::text").fetchone()
    assert lsn_row is not None
    # Swap the table's folder: overlays of the old lake must not outlive the new base.
    if target.exists():
        retired = target.with_name(f".{target.name}.retired")
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(target, retired)
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, target)
    days = len(layout.base_files(lake_table.name))
    return SnapshotReport(
        lake_table.name, copied, days, time.monotonic() - started, str(lsn_row[0])
    )
