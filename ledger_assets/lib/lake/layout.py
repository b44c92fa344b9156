"""Where lake files live, and what a lake partition is.

A lake partition is one tenant's rows of one table for one account-local day. Physically::

    <root>/<table>/base/local_date=<d>/data.parquet                     every tenant's rows of day d
    <root>/<table>/overlay/tenant_id=<t>/local_date=<d>/data.parquet    tenant t's rows of day d

A partition's rows are its overlay file when one exists, otherwise its tenant's slice of the
base file of that day. CDC and repairs write overlays only: rewriting one partition writes one
small file and leaves every other file byte-identical, and its cost does not depend on the
lake's size. Compaction folds old overlays into the day's base file, so scans read ~one file per
day instead of one per tenant-day (a 200M-row lake over 1,000 tenants would otherwise be >1M
tiny files, which makes DuckDB scans 25-50x slower). An overlay with zero rows is meaningful:
it says the partition is now empty, hiding the base file's rows.

Every file is replaced atomically under a fixed name (write a temporary file, fsync, rename), so
a reader always finds either the old or the new content.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

DATA_FILE = "data.parquet"


@dataclass(frozen=True, order=True)
class PartitionKey:
    table: str
    tenant_id: int
    local_date: date

    @property
    def dagster_key(self) -> str:
        """The Dagster multi-partition key string (dimensions in alphabetical order)."""
        return f"{self.local_date.isoformat()}|{self.tenant_id}"


@dataclass(frozen=True)
class LakeLayout:
    root: Path

    def table_dir(self, table: str) -> Path:
        return self.root / table

    def base_file(self, table: str, day: date) -> Path:
        return self.root / table / "base" / f"local_date={day.isoformat()}" / DATA_FILE

    def overlay_file(self, key: PartitionKey) -> Path:
        return (
            self.root / key.table / "overlay" / f"tenant_id={key.tenant_id}"
            / f"local_date={key.local_date.isoformat()}" / DATA_FILE
        )  # fmt: skip

    def base_glob(self, table: str) -> str:
        return str(self.root / table / "base" / "*" / DATA_FILE)

    def overlay_glob(self, table: str) -> str:
        return str(self.root / table / "overlay" / "*" / "*" / DATA_FILE)

    def base_files(self, table: str) -> list[Path]:
        return sorted((self.root / table / "base").glob(f"*/{DATA_FILE}"))

    def overlay_files(self, table: str) -> list[Path]:
        return sorted((self.root / table / "overlay").glob(f"*/*/{DATA_FILE}"))

    def overlay_keys(self, table: str) -> list[PartitionKey]:
        keys = []
        for path in self.overlay_files(table):
            tenant = int(path.parent.parent.name.removeprefix("tenant_id="))
            day = date.fromisoformat(path.parent.name.removeprefix("local_date="))
            keys.append(PartitionKey(table, tenant, day))
        return keys
