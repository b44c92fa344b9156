"""Publish the marts as Parquet for the dashboard and other engines, atomically as a set.

Layout under the export root::

    snapshots/<stamp>/<mart>.parquet     one complete, immutable set of marts
    snapshots/<stamp>/source_tags.parquet  per (tenant, local day): the source position behind it
    CURRENT                              JSON naming the snapshot to read (replaced atomically)

``source_tags`` (``tenant_id``, ``local_date``, ``source_lsn`` as an integer WAL position) is the
``source_positions`` mart with its zeros resolved: a lake row written by the seeding snapshot
has ``_lsn`` 0, and reflects the source as of the seed's consistent position, so each tag is
``greatest(max _lsn, seeded_lsn)`` and never 0 when the lake has data. A cache keyed by the tags
of the days it covers stays valid across snapshots that did not touch those days.

A build writes a whole new snapshot folder, fsyncs it, then replaces ``CURRENT`` (temporary
file + rename). A reader resolves ``CURRENT`` once and reads that folder: it sees either the
previous set or the new one, never a half-written file and never marts from two builds mixed.
Older snapshots are kept for ``keep`` builds so a reader that resolved ``CURRENT`` just before a
swap can finish; then they are deleted. The DuckDB file itself is the writer's: readers in other
processes use these files (a DuckDB file open for writing cannot be opened by another process).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from ledger_assets.lib.cdc.changelog import atomic_write_bytes, fsync_path
from ledger_assets.lib.cdc.lsn import Lsn
from ledger_assets.lib.lake.reader import sql_string

POINTER = "CURRENT"
SNAPSHOTS = "snapshots"
#: The mart exported as :data:`SOURCE_TAGS` instead of as itself.
SOURCE_POSITIONS = "source_positions"
SOURCE_TAGS = "source_tags"


@dataclass(frozen=True)
class ExportReport:
    snapshot: Path
    rows: dict[str, int]
    seconds: float


def _identifier(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a plain identifier: {name!r}")
    return f'"{name}"'


def current_snapshot(root: Path) -> Path | None:
    """The snapshot folder readers should use now, or None before the first export."""
    pointer = root / POINTER
    if not pointer.exists():
        return None
    return root / SNAPSHOTS / str(json.loads(pointer.read_text())["snapshot"])


def export_marts(
    database: Path,
    schema: str,
    marts: Sequence[str],
    root: Path,
    source_lsn: str | None = None,
    keep: int = 3,
    seeded_lsn: str | None = None,
) -> ExportReport:
    """Copy ``marts`` from ``database``.``schema`` into a new snapshot and publish it.

    Args:
        database: the marts DuckDB file.
        schema: the schema dbt built the marts in.
        marts: table names to export; :data:`SOURCE_POSITIONS` becomes :data:`SOURCE_TAGS`.
        root: the export root.
        source_lsn: the lake watermark the marts reflect, recorded in ``CURRENT``.
        keep: snapshots to keep, including the new one.
        seeded_lsn: the lake's seeding position (``X/Y``): the tag of snapshot-only days.
    """
    floor = int(Lsn.parse(seeded_lsn)) if seeded_lsn else 0
    started = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    snapshots = root / SNAPSHOTS
    staging = snapshots / f".{stamp}.tmp"
    final = snapshots / stamp
    staging.mkdir(parents=True)
    rows: dict[str, int] = {}
    con = duckdb.connect(str(database), read_only=True)
    try:
        # Qualified by catalog: the database file "marts.duckdb" and the schema share a name.
        catalog = con.execute("select current_database()").fetchone()
        assert catalog is not None
        for mart in marts:
            relation = ".".join(_identifier(n) for n in (str(catalog[0]), schema, mart))
            name, select = mart, f"select * from {relation}"  # noqa: S608
            if mart == SOURCE_POSITIONS:
                name = SOURCE_TAGS
                select = (
                    "select tenant_id, local_date, "  # noqa: S608
                    f"greatest(max_lsn, {floor}) as source_lsn from {relation} "
                    "order by tenant_id, local_date"
                )
            target = staging / f"{name}.parquet"
            # COPY takes no parameters; floor is an int, the rest identifiers and a path literal.
            con.execute(
                f"copy ({select}) to {sql_string(str(target))} (format parquet, compression zstd)"
            )
            fsync_path(target)
            count = con.execute(f"select count(*) from {relation}").fetchone()  # noqa: S608
            rows[name] = int(count[0]) if count else 0
    finally:
        con.close()
    os.replace(staging, final)
    fsync_path(snapshots)
    pointer = {
        "snapshot": stamp,
        "published_at": datetime.now(UTC).isoformat(),
        "source_lsn": source_lsn,
        "rows": rows,
    }
    atomic_write_bytes(root / POINTER, json.dumps(pointer, sort_keys=True).encode())
    # Older snapshots beyond ``keep``, and staging folders a crashed export left behind.
    older = sorted(p for p in snapshots.iterdir() if p.name != stamp and not p.name.startswith("."))
    stale = [p for p in snapshots.iterdir() if p.name.startswith(".")]
    for old in older[: max(0, len(older) - (keep - 1))] + stale:
        shutil.rmtree(old, ignore_errors=True)
    return ExportReport(final, rows, time.monotonic() - started)


def mart_tables(database: Path, schema: str) -> list[str]:
    """The tables (not views) of ``schema`` in the marts database, by name."""
    con = duckdb.connect(str(database), read_only=True)
    try:
        rows = con.execute(
            "select table_name from information_schema.tables "
            "where table_schema = ? and table_type = 'BASE TABLE' order by table_name",
            [schema],
        ).fetchall()
    finally:
        con.close()
    return [str(r[0]) for r in rows]
