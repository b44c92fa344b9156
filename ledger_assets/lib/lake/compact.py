"""Fold overlay files into their day's base file, so scans stay at about one file per day.

CDC writes one overlay per touched tenant-day. Left alone, a busy lake would grow towards one
file per tenant-day, which is what makes DuckDB scans slow. Compaction rewrites a day's base
file with the overlays' rows in place of the base rows they supersede, then removes those
overlays. It changes no partition's content, only where the rows live; it runs outside the hot
window (days still receiving changes would be re-overlaid at once) and never on the latency
path of a late dispute.

Every writer of a table's files (apply, compaction, repair) holds the table's lock, so an
overlay written during a compaction cannot be lost. The locks are files on the writer host's disk
(``LakeLayout.lock_file``), also for a lake on S3: one host writes the lake (Dagster's
``lake_writer`` pool has a limit of 1), and S3 has no lock primitive.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date

import duckdb
import pyarrow as pa

from ledger_assets.lib.lake.layout import LakeLayout, PartitionKey
from ledger_assets.lib.lake.reader import sql_list
from ledger_assets.lib.lake.schema import LakeTable
from ledger_assets.lib.lake.store import parquet_bytes


@contextmanager
def table_lock(layout: LakeLayout, table: str) -> Iterator[None]:
    """Exclusive writer lock on one lake table (an advisory file lock; blocks until free)."""
    lock = layout.lock_file(table)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@dataclass(frozen=True)
class CompactionReport:
    table: str
    days: int
    overlays_folded: int
    rows: int


def compact(layout: LakeLayout, lake_table: LakeTable, before: date) -> CompactionReport:
    """Fold every overlay of a day earlier than ``before`` into that day's base file."""
    by_day: dict[date, list[int]] = {}
    for key in layout.overlay_keys(lake_table.name):
        if key.local_date < before:
            by_day.setdefault(key.local_date, []).append(key.tenant_id)
    folded = rows = 0
    with table_lock(layout, lake_table.name):
        for day, tenants in sorted(by_day.items()):
            rows += _compact_day(layout, lake_table, day, tenants)
            folded += len(tenants)
    return CompactionReport(lake_table.name, len(by_day), folded, rows)


def _compact_day(layout: LakeLayout, lake_table: LakeTable, day: date, tenants: list[int]) -> int:
    base = layout.base_file(lake_table.name, day)
    overlays = [layout.overlay_file(PartitionKey(lake_table.name, t, day)) for t in tenants]
    con = duckdb.connect()
    try:
        layout.path.configure_duckdb(con)
        con.register("empty", lake_table.schema.empty_table())
        con.register("overlaid", pa.table({"tenant_id": pa.array(tenants, pa.int32())}))
        kept = (
            f"select * from read_parquet({sql_list([base.uri])}) "  # noqa: S608 - escaped path
            "where tenant_id not in (select tenant_id from overlaid)"
            if base.exists()
            else "select * from empty"
        )
        merged = con.execute(
            f"select * from ({kept}) union all by name "  # noqa: S608 - escaped paths
            f"select * from read_parquet({sql_list([p.uri for p in overlays])}) "
            f"order by tenant_id, {lake_table.spec.primary_key}"
        ).to_arrow_table()
    finally:
        con.close()
    table = merged.select(lake_table.schema.names).cast(lake_table.schema)
    # The new base holds every overlay's rows before any overlay goes away, so a reader sees
    # each partition's rows at every instant (overlay first, then the base).
    # The new base's mtime is the oldest of the files it replaces: partition versions treat
    # content as "possibly in a report" when it is older than the newest report's read time
    # (versions.keep_version), and folding it into a new file must not make it look newer.
    # (S3 cannot back-date an object: see ARCHITECTURE.md §6 "Storage".)
    since = min(p.stat().st_mtime_ns for p in [*overlays, *([base] if base.exists() else [])])
    base.write_bytes(parquet_bytes(table))
    base.backdate(since)
    for path in overlays:
        path.unlink()
    return int(table.num_rows)
