"""Read a lake table as one relation: base files, with overlays superseding their partitions."""

from __future__ import annotations

from collections.abc import Collection
from datetime import date

import duckdb
import pyarrow as pa

from ledger_assets.lib.lake.layout import LakeLayout
from ledger_assets.lib.lake.schema import LakeTable

#: Hive partitioning off (the folder names must not override the files' typed columns); union
#: by name (files written before a column was added lack it).
READ_OPTIONS = "hive_partitioning = false, union_by_name = true"


def sql_string(text: str) -> str:
    """A DuckDB string literal, for the places that take no parameters (DDL, COPY targets)."""
    return "'" + text.replace("'", "''") + "'"


def sql_list(paths: list[str]) -> str:
    """A DuckDB list literal of strings."""
    return "[" + ", ".join(sql_string(p) for p in paths) + "]"


def create_lake_view(
    con: duckdb.DuckDBPyConnection,
    layout: LakeLayout,
    lake_table: LakeTable,
    name: str | None = None,
    days: Collection[date] | None = None,
) -> str:
    """Create (or replace) a view over the current files of ``lake_table``; returns its name.

    The view is a snapshot of the file list: call again after the lake changed. A partition with
    an overlay file is read from the overlay only; every other partition from its day's base.
    Hive partitioning is off: the folder names (tenant_id=, local_date=) must not override the
    files' own typed columns (DuckDB would read tenant_id as BIGINT from the path). Files are
    unioned by column name, so files written before a column was added read NULL for it.

    With ``days``, only the files of those days (every tenant's partition of each day): a cycle
    that needs a few days neither lists every base folder nor opens every file.
    """
    view = name or lake_table.name
    layout.path.configure_duckdb(con)
    keys = layout.overlay_keys(lake_table.name)
    if days is None:
        bases = [p.uri for p in layout.base_files(lake_table.name)]
    else:
        wanted = set(days)
        keys = [k for k in keys if k.local_date in wanted]
        candidates = (layout.base_file(lake_table.name, d) for d in sorted(wanted))
        bases = [p.uri for p in candidates if p.exists()]
    overlays = [layout.overlay_file(k).uri for k in keys]
    empty = f"__empty_{view}"
    con.register(empty, lake_table.schema.empty_table())
    hidden = f"__overlaid_{view}"
    con.register(
        hidden,
        pa.table(
            {
                "tenant_id": pa.array([k.tenant_id for k in keys], pa.int32()),
                "local_date": pa.array([k.local_date for k in keys], pa.date32()),
            }
        ),
    )
    base_sql = (
        f"select b.* from read_parquet({sql_list(bases)}, {READ_OPTIONS}) b "  # noqa: S608 - escaped paths
        f"anti join {hidden} h using (tenant_id, local_date)"
        if bases
        else f"select * from {empty}"  # noqa: S608 - a registered name
    )
    overlay_sql = (
        f"select * from read_parquet({sql_list(overlays)}, {READ_OPTIONS})"  # noqa: S608 - escaped paths
        if overlays
        else f"select * from {empty}"  # noqa: S608 - a registered name
    )
    # The empty table, unioned by name last, gives every column of the current schema, in its
    # order, even when no file has it yet.
    columns = ", ".join(f'"{c}"' for c in lake_table.schema.names)
    con.execute(
        f"create or replace view {view} as select {columns} from "  # noqa: S608 - catalog names
        f"({base_sql} union all by name {overlay_sql} union all by name select * from {empty})"
    )
    return view
