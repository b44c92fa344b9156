"""The contract between the reconciliation check (the writer) and the marts (the reader).

The check appends one Parquet file per run to ``<state dir>/reconciliation/results/`` with the
schema :data:`RECONCILIATION_RESULTS` — one row per (tenant, local day, currency, lake table) it
compared — using :func:`write_results`, which writes a temporary file and renames it, so a run's
rows appear all at once or not at all. The marts read every file through the view
``reconciliation.results`` and keep the latest row per key; with no file at all the view is
empty and so is the mart. Files are never rewritten; a retention job may delete old ones.

Money columns are integer minor units of ``currency``; ``status`` is ``match``, ``mismatch``
or ``skipped`` (e.g. the lake was seeding). Columns may be added later (as nullable);
readers use ``union_by_name`` so older files stay readable.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

RESULTS_SUBDIR = Path("reconciliation") / "results"

RECONCILIATION_RESULTS = pa.schema(
    [
        pa.field("check_run_id", pa.string(), nullable=False),
        pa.field("checked_at", pa.timestamp("us", tz="UTC"), nullable=False),
        #: The lake's replication watermark the comparison was pinned to.
        pa.field("watermark_lsn", pa.string(), nullable=False),
        pa.field("tenant_id", pa.int32(), nullable=False),
        pa.field("local_date", pa.date32(), nullable=False),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("table_name", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("pg_rows", pa.int64()),
        pa.field("lake_rows", pa.int64()),
        pa.field("pg_amount", pa.int64()),
        pa.field("lake_amount", pa.int64()),
        pa.field("pg_fee", pa.int64()),
        pa.field("lake_fee", pa.int64()),
        pa.field("pg_net", pa.int64()),
        pa.field("lake_net", pa.int64()),
        #: A few differing primary keys, comma-separated, for the alert and the dashboard.
        pa.field("differing_keys", pa.string()),
    ]
)

STATUSES = ("match", "mismatch", "skipped")


def results_dir(state_dir: Path) -> Path:
    return state_dir / RESULTS_SUBDIR


def result_files(folder: Path) -> list[Path]:
    """The landed result files, oldest name first (temporary files are skipped)."""
    if not folder.exists():
        return []
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))


def write_results(folder: Path, rows: pa.Table) -> Path:
    """Land one check run's rows atomically; returns the file.

    Raises:
        ValueError: the rows do not have the contract's columns and types, or a status is
            not one of :data:`STATUSES`.
    """
    try:
        table = rows.select(RECONCILIATION_RESULTS.names).cast(RECONCILIATION_RESULTS)
    except (KeyError, pa.ArrowInvalid) as exc:
        raise ValueError(f"reconciliation results do not match the contract: {exc}") from exc
    bad = set(table.column("status").to_pylist()) - set(STATUSES)
    if bad:
        raise ValueError(f"unknown reconciliation status(es) {sorted(bad)}; allowed: {STATUSES}")
    folder.mkdir(parents=True, exist_ok=True)
    # Names sort by landing time, so "oldest first" is a plain sort.
    final = folder / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
    temporary = folder / f".{final.name}.tmp"
    pq.write_table(table, temporary)
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, final)
    return final


def open_mismatches(folder: Path, start: date, end: date) -> pa.Table:
    """The (table, tenant, day, currency) keys of days in ``[start, end)`` whose latest result
    is ``mismatch``: a later ``match`` for the same key (a re-check, an auto-heal) clears it.

    Returns a table with ``table_name, tenant_id, local_date, currency, check_run_id`` (empty
    when there are no result files).
    """
    files = [str(p) for p in result_files(folder)]
    columns = ["table_name", "tenant_id", "local_date", "currency", "check_run_id"]
    if not files:
        return RECONCILIATION_RESULTS.empty_table().select(columns)
    con = duckdb.connect()
    try:
        return con.execute(
            """
            select table_name, tenant_id, local_date, currency, check_run_id
            from read_parquet(?, union_by_name = true, hive_partitioning = false)
            where local_date >= ? and local_date < ?
            qualify row_number() over (
                partition by table_name, tenant_id, local_date, currency
                order by checked_at desc, check_run_id desc
            ) = 1 and status = 'mismatch'
            order by table_name, tenant_id, local_date, currency
            """,
            [files, start, end],
        ).to_arrow_table()
    finally:
        con.close()
