"""Which lake partitions' files changed between two looks: so a cycle can check exactly those.

CDC tells reconciliation which partitions it rewrote, but not what else touched the files: an
edited, truncated, duplicated or deleted Parquet file changes no change-log entry. Stat-ing every
file is cheap (a few thousand base files and the hot window's overlays; on S3 the same listing
that finds them), so each cycle compares ``(size, mtime_ns, inode)`` of every lake file (on S3
``(size, LastModified, 0)``, see ``storage.py``) with the previous cycle's and checks the
partitions behind any difference. An overlay names one (tenant, day); a base file holds every
tenant of its day, so a changed or deleted base file puts its whole day in scope.

Legitimate writers (apply, compaction, repair, a re-seed) change files too; their partitions are
then checked once more, which is the point: the check does not trust any writer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from ledger_assets.lib.cdc.changelog import atomic_write_bytes
from ledger_assets.lib.lake.layout import DATA_FILE, LakeLayout
from ledger_assets.lib.lake.storage import FileStat

#: (size, mtime_ns, inode): any local write through the store (a temporary file renamed into
#: place) changes the inode; an in-place edit changes size or mtime. S3: inode 0.


@dataclass(frozen=True)
class Drift:
    #: (table, day): a base file changed, appeared or vanished; every tenant of the day.
    days: frozenset[tuple[str, date]]
    #: (table, tenant, day): an overlay file changed, appeared or vanished.
    partitions: frozenset[tuple[str, int, date]]

    @property
    def empty(self) -> bool:
        return not self.days and not self.partitions


def lake_file_stats(layout: LakeLayout, tables: list[str]) -> dict[str, FileStat]:
    """Every base and overlay file of ``tables``, by path relative to the lake root."""
    stats: dict[str, FileStat] = {}
    for table in tables:
        folder = layout.table_dir(table)
        listed = [*(folder / "base").file_stats(f"*/{DATA_FILE}"),
                  *(folder / "overlay").file_stats(f"*/*/{DATA_FILE}")]  # fmt: skip
        for path, stat in listed:
            stats[path.relative_to(layout.path)] = stat
    return stats


def drift_between(before: dict[str, FileStat], after: dict[str, FileStat]) -> Drift:
    """The partitions whose files differ between two stat maps."""
    days: set[tuple[str, date]] = set()
    partitions: set[tuple[str, int, date]] = set()
    for rel in set(before) | set(after):
        if before.get(rel) == after.get(rel):
            continue
        parts = Path(rel).parts
        # <table>/base/local_date=<d>/data.parquet or
        # <table>/overlay/tenant_id=<t>/local_date=<d>/data.parquet
        table, kind = parts[0], parts[1]
        day = date.fromisoformat(parts[-2].removeprefix("local_date="))
        if kind == "base":
            days.add((table, day))
        else:
            partitions.add((table, int(parts[2].removeprefix("tenant_id=")), day))
    return Drift(frozenset(days), frozenset(partitions))


class FileWatch:
    """The stat map of the last look, kept in a JSON file beside reconciliation's state."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, FileStat] | None:
        """The previous look, or None before the first one."""
        if not self.path.exists():
            return None
        raw = json.loads(self.path.read_text())
        return {rel: FileStat(int(s[0]), int(s[1]), int(s[2])) for rel, s in raw.items()}

    def save(self, stats: dict[str, FileStat]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, json.dumps(stats, sort_keys=True).encode())
