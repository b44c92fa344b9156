"""Partition versions: read the lake as it was at an earlier source position.

A report (a marts snapshot) records the lake watermark it was built from (``applied_end``, an
LSN). A late change — a dispute on a months-old charge — later rewrites old partitions, and the
report could no longer be reproduced from the current files. So when ``store.write_partition``
replaces a partition, the content it replaces is kept first::

    <root>/<table>/_versions/tenant_id=<t>/local_date=<d>/<W>.parquet

where ``W`` (16 hex digits) is the lake's watermark at the moment of the replacement: the old
content is what every reader with a watermark up to ``W`` saw. Reading *as of* a watermark ``L``
therefore takes, per partition, the oldest version named ``W >= L``, and the current content
for partitions that have none (they have not changed since ``L``). When two writes replace one
partition at the same watermark (a repair, then another), the first version — the content
readers at ``W`` saw — is kept.

Only content a report can have read is kept (:func:`mark_published`, called by each marts build
once its lake views exist): a partition of the current day is rewritten on every CDC tick, and
keeping each intermediate state nobody reported on would cost a file per tick. "As of" is
therefore exact at the positions reports were built from, which is what reproducing a report
needs.

Retention: versions older than :data:`RETENTION_DAYS` are pruned by the nightly compaction job;
the highest watermark pruned is recorded (``<table>/_versions/PRUNED``), and reading as of a
position at or before it fails instead of silently mixing in newer content. Cost: at most one
file per partition and published report (the whole previous partition, zstd Parquet, a few KB
for a tenant-day), see ARCHITECTURE.md §7 for the measured figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from ledger_assets.lib.cdc.lsn import Lsn
from ledger_assets.lib.lake.layout import LakeLayout, PartitionKey, overlay_key
from ledger_assets.lib.lake.reader import create_lake_view
from ledger_assets.lib.lake.schema import LakeTable
from ledger_assets.lib.lake.storage import LakePath

VERSIONS_DIR = "_versions"
#: How long a replaced partition's content is kept: a month of reports stays reproducible
#: (month-end closes are re-run in the following days), plus a few days of slack.
RETENTION_DAYS = 35
_PRUNED = "PRUNED"
_PUBLISHED = "published_by_ns"


class VersionExpiredError(LookupError):
    """The requested position is older than the versions still kept (retention)."""


def versions_dir(layout: LakeLayout, table: str) -> LakePath:
    return layout.table_dir(table) / VERSIONS_DIR


def version_file(layout: LakeLayout, key: PartitionKey, watermark: Lsn) -> LakePath:
    return (
        versions_dir(layout, key.table) / f"tenant_id={key.tenant_id}"
        / f"local_date={key.local_date.isoformat()}" / f"{watermark.hex16}.parquet"
    )  # fmt: skip


def mark_published(layout: LakeLayout, read_by_ns: int) -> None:
    """Record that a published report read the lake's files as they were at ``read_by_ns``.

    Called by a marts build right after its lake views are created and before dbt reads
    them: every file content older than that may be behind a report, so replacing it later
    (even during the build) keeps it as a version. The mark only moves forward.
    """
    current = published_by_ns(layout)
    if current is not None and current >= read_by_ns:
        return
    (layout.path / "_state" / _PUBLISHED).write_bytes(str(read_by_ns).encode())


def published_by_ns(layout: LakeLayout) -> int | None:
    """The read time of the newest published report (None: nothing published yet)."""
    path = layout.path / "_state" / _PUBLISHED
    return int(path.read_text()) if path.exists() else None


def keep_version(
    layout: LakeLayout,
    key: PartitionKey,
    previous: Callable[[], bytes],
    previous_since_ns: int,
) -> LakePath | None:
    """Keep the content ``previous()`` returns (a partition's file bytes, made only when
    needed) as the version superseded now, if a published report can have read it.

    ``previous_since_ns`` is when that content was written (its file's mtime; 0 for a partition
    that never had rows). Content written after the newest report read the lake was never in a
    report: replacing it keeps nothing. That bounds versions to one per partition per published
    report, instead of one per CDC tick (a hot partition is rewritten every few seconds).
    Nothing is kept while the lake is seeding either. Returns the version file, or None.
    """
    # Imported here: sync imports apply, which imports store, which imports this module.
    from ledger_assets.lib.lake.sync import read_lake_state

    published = published_by_ns(layout)
    if published is None or previous_since_ns > published:
        return None
    state = read_lake_state(layout)
    if state.seeding or state.applied_end is None:
        return None
    path = version_file(layout, key, state.applied_end)
    if path.exists():
        return path  # an earlier write at this watermark kept what readers at W saw
    path.write_bytes(previous())
    return path


@dataclass(frozen=True)
class StoredVersion:
    key: PartitionKey
    watermark: Lsn
    path: LakePath


def stored_versions(layout: LakeLayout, table: str) -> list[StoredVersion]:
    """Every version of ``table``, by partition and then watermark (ascending)."""
    found = [
        StoredVersion(overlay_key(table, path), Lsn.from_hex16(path.stem), path)
        for path in versions_dir(layout, table).files("tenant_id=*/local_date=*/*.parquet")
    ]
    return sorted(found, key=lambda v: (v.key, v.watermark))


def pruned_through(layout: LakeLayout, table: str) -> Lsn | None:
    """The highest watermark whose version was pruned (None: nothing pruned yet)."""
    marker = versions_dir(layout, table) / _PRUNED
    return Lsn.from_hex16(marker.read_text().strip()) if marker.exists() else None


def versions_as_of(layout: LakeLayout, table: str, watermark: Lsn) -> dict[PartitionKey, LakePath]:
    """Per partition replaced since ``watermark``, the file holding its content as readers with
    that watermark saw it: the oldest version named ``W >= watermark``. A partition not listed
    has not changed since; its current file holds that content.

    Raises:
        VersionExpiredError: versions needed for ``watermark`` may have been pruned.
    """
    horizon = pruned_through(layout, table)
    if horizon is not None and watermark <= horizon:
        raise VersionExpiredError(
            f"{table} as of {watermark}: versions up to {horizon} were pruned "
            f"(retention {RETENTION_DAYS} days)"
        )
    chosen: dict[PartitionKey, LakePath] = {}
    for version in stored_versions(layout, table):
        if version.watermark >= watermark:
            chosen.setdefault(version.key, version.path)  # ascending: the oldest one wins
    return chosen


def create_lake_view_as_of(
    con: duckdb.DuckDBPyConnection,
    layout: LakeLayout,
    lake_table: LakeTable,
    watermark: Lsn,
    name: str | None = None,
) -> str:
    """Create a view of ``lake_table`` as readers with lake watermark ``watermark`` saw it.

    Raises:
        VersionExpiredError: versions needed for ``watermark`` may have been pruned.
    """
    versions = versions_as_of(layout, lake_table.name, watermark)
    return create_lake_view(con, layout, lake_table, name, versions=versions)


@dataclass(frozen=True)
class PruneReport:
    table: str
    files: int
    bytes: int
    kept_files: int
    kept_bytes: int


def prune_versions(
    layout: LakeLayout, table: str, retention_days: int = RETENTION_DAYS, now: float | None = None
) -> PruneReport:
    """Delete versions superseded more than ``retention_days`` ago (by file time)."""
    cutoff = (time.time() if now is None else now) - retention_days * 86_400
    expired: list[tuple[StoredVersion, int]] = []
    kept = kept_bytes = 0
    for version in stored_versions(layout, table):
        stat = version.path.stat()
        if stat.st_mtime_ns / 1e9 < cutoff:
            expired.append((version, stat.st_size))
        else:
            kept += 1
            kept_bytes += stat.st_size
    if expired:
        previous = pruned_through(layout, table)
        horizon = max(v.watermark for v, _ in expired)
        if previous is not None:
            horizon = max(horizon, previous)
        # The marker moves before the files go: a crash in between fails reads closed.
        (versions_dir(layout, table) / _PRUNED).write_bytes(horizon.hex16.encode())
        for version, _ in expired:
            version.path.unlink()
    return PruneReport(table, len(expired), sum(n for _, n in expired), kept, kept_bytes)
