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

Every file is replaced atomically under a fixed name (locally a temporary file, fsync, rename; on
S3 one upload), so a reader always finds either the old or the new content. The root is a local
folder or an ``s3://`` prefix; files are reached through :class:`~.storage.LakePath` either way.
What a writer host keeps on its own disk (``local_dir``: the tables' writer locks and the CDC
change log) is never on S3; see ARCHITECTURE.md §6 "Storage".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import cached_property
from pathlib import Path

from ledger_assets.lib.lake.storage import S3_SCHEME, LakePath, LakeStorageError, S3Settings

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
    #: A local folder, or ``s3://bucket/prefix``.
    root: Path | str
    #: This host's folder for the lake's local-only parts (writer locks, the change log).
    #: Default: the root itself when it is local; required for an S3 root.
    local_dir: Path | None = None
    #: S3 settings for an ``s3://`` root; default: the standard AWS environment variables.
    s3: S3Settings | None = None

    @cached_property
    def path(self) -> LakePath:
        """The root as a :class:`LakePath`; for S3, checked once (bucket and endpoint)."""
        root = LakePath.at(self.root, self.s3)
        root.check()
        return root

    @property
    def is_local(self) -> bool:
        return not str(self.root).startswith(S3_SCHEME)

    @property
    def local(self) -> Path:
        """Where this host keeps the writer locks and (by default) the change log."""
        if self.local_dir is not None:
            return Path(self.local_dir)
        if not self.is_local:
            raise LakeStorageError(f"lake root {self.root}: an S3 lake needs a local_dir")
        return Path(self.root).resolve()

    @property
    def changelog_dir(self) -> Path:
        """The CDC change log: on this host's disk (its fsync-rename-manifest protocol)."""
        return self.local / "_changelog"

    def table_dir(self, table: str) -> LakePath:
        return self.path / table

    def lock_file(self, table: str) -> Path:
        """The table's writer lock (``compact.table_lock``), on this host's disk."""
        return self.local / table / ".lock"

    def base_file(self, table: str, day: date) -> LakePath:
        return self.path / table / "base" / f"local_date={day.isoformat()}" / DATA_FILE

    def overlay_file(self, key: PartitionKey) -> LakePath:
        return (
            self.path / key.table / "overlay" / f"tenant_id={key.tenant_id}"
            / f"local_date={key.local_date.isoformat()}" / DATA_FILE
        )  # fmt: skip

    def base_files(self, table: str) -> list[LakePath]:
        return (self.path / table / "base").files(f"*/{DATA_FILE}")

    def overlay_files(self, table: str) -> list[LakePath]:
        return (self.path / table / "overlay").files(f"*/*/{DATA_FILE}")

    def overlay_keys(self, table: str) -> list[PartitionKey]:
        return [overlay_key(table, path) for path in self.overlay_files(table)]


def overlay_key(table: str, path: LakePath) -> PartitionKey:
    """The partition of overlay file ``path``."""
    tenant = int(path.parent.parent.name.removeprefix("tenant_id="))
    day = date.fromisoformat(path.parent.name.removeprefix("local_date="))
    return PartitionKey(table, tenant, day)
