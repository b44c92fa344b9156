"""Read a lake table as one relation: base files, with overlays superseding their partitions."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date

import duckdb
import pyarrow as pa

from ledger_assets.lib.lake.layout import LakeLayout, PartitionKey
from ledger_assets.lib.lake.schema import LakeTable
from ledger_assets.lib.lake.storage import LakePath

#: Hive partitioning off (the folder names must not override the files' typed columns); union
#: by name (files written before a column was added lack it).
READ_OPTIONS = "hive_partitioning = false, union_by_name = true"


def sql_string(text: str) -> str:
    """A DuckDB string literal, for the places that take no parameters (DDL, COPY targets)."""
    return "'" + text.replace("'", "''") + "'"


def sql_list(paths: list[str]) -> str:
    """A DuckDB list literal of strings."""
    return "[" + ", ".join(sql_string(p) for p in paths) + "]"


@dataclass(frozen=True)
class LakeFiles:
    """The files that make up a lake table (or some of its days) for one reader."""

    #: Day base files (URIs), each holding every tenant's rows of its day.
    bases: list[str]
    #: Partitions read from a file of their own instead of their slice of the day's base: the
    #: current overlays, or kept versions for a reader at an older position.
    superseding: dict[PartitionKey, str]

    @property
    def count(self) -> int:
        return len(self.bases) + len(self.superseding)

    def superseded_keys(self) -> pa.Table:
        """The superseded partitions as a (tenant_id, local_date) table, for the anti join."""
        keys = list(self.superseding)
        return pa.table(
            {
                "tenant_id": pa.array([k.tenant_id for k in keys], pa.int32()),
                "local_date": pa.array([k.local_date for k in keys], pa.date32()),
            }
        )


def lake_files(
    layout: LakeLayout,
    table: str,
    days: Collection[date] | None = None,
    versions: Mapping[PartitionKey, LakePath] | None = None,
) -> LakeFiles:
    """The current files of ``table``, with ``versions`` (``versions.versions_as_of``) read in
    place of their partitions' current files; with ``days``, only those days' files (every
    tenant's partition of each day), so a reader of a few days neither lists every base folder
    nor opens every file."""
    superseding = {k: layout.overlay_file(k) for k in layout.overlay_keys(table)}
    superseding.update(versions or {})
    if days is None:
        bases = [p.uri for p in layout.base_files(table)]
    else:
        wanted = set(days)
        superseding = {k: p for k, p in superseding.items() if k.local_date in wanted}
        candidates = (layout.base_file(table, d) for d in sorted(wanted))
        bases = [p.uri for p in candidates if p.exists()]
    return LakeFiles(bases, {k: p.uri for k, p in superseding.items()})


def lake_view_query(files: LakeFiles, lake_table: LakeTable, superseded: str, empty: str) -> str:
    """The query of a view over ``files``: each base file without its superseded partitions
    (relation ``superseded``, from :meth:`LakeFiles.superseded_keys`), plus the superseding
    files. ``empty`` is a relation of the table's current schema with no rows: unioned by name
    last, it gives every column of that schema, in its order, even when no file has it yet.

    Hive partitioning is off: the folder names (tenant_id=, local_date=) must not override the
    files' own typed columns (DuckDB would read tenant_id as BIGINT from an overlay's path, and
    the view's types would change with the mere presence of an overlay). Files are unioned by
    column name, so files written before a column was added read NULL for it.
    """
    parts = [f"select * from {empty}"]  # noqa: S608 - a relation name of the caller's
    if files.bases:
        parts.insert(
            0,
            f"select b.* from read_parquet({sql_list(files.bases)}, {READ_OPTIONS}) b "  # noqa: S608 - escaped paths
            f"anti join {superseded} h using (tenant_id, local_date)",
        )
    if files.superseding:
        paths = sql_list(list(files.superseding.values()))
        parts.insert(-1, f"select * from read_parquet({paths}, {READ_OPTIONS})")  # noqa: S608
    columns = ", ".join(f'"{c}"' for c in lake_table.schema.names)
    return f"select {columns} from ({' union all by name '.join(parts)})"  # noqa: S608


def create_lake_view(
    con: duckdb.DuckDBPyConnection,
    layout: LakeLayout,
    lake_table: LakeTable,
    name: str | None = None,
    days: Collection[date] | None = None,
    versions: Mapping[PartitionKey, LakePath] | None = None,
) -> str:
    """Create (or replace) a view over the current files of ``lake_table``; returns its name.

    The view is a snapshot of the file list: call again after the lake changed. A partition with
    an overlay file is read from the overlay only; every other partition from its day's base.
    ``days`` and ``versions``: see :func:`lake_files`. The view's two helper relations are Arrow
    tables registered on ``con``: it lives as long as that connection.
    """
    view = name or lake_table.name
    layout.path.configure_duckdb(con)
    files = lake_files(layout, lake_table.name, days, versions)
    empty, superseded = f"__empty_{view}", f"__overlaid_{view}"
    con.register(empty, lake_table.schema.empty_table())
    con.register(superseded, files.superseded_keys())
    query = lake_view_query(files, lake_table, superseded, empty)
    con.execute(f"create or replace view {view} as {query}")
    return view
