"""Apply a batch of captured changes to the lake: rewrite exactly the touched partitions.

For one table and one change-log batch:

1. Every change's old row and new row name a partition (tenant, local day); together they are
   the touched partitions — a row that moved leaves one and enters another.
2. Per primary key, the last change in ``(commit_lsn, seq)`` order decides: a new row image, or
   gone (a delete, or the old key of an update that changed the key). Row images are whole
   (REPLICA IDENTITY FULL, TOAST filled by the capture), so the last image is the row.
3. Each touched partition's new content is its current rows minus every changed key, plus the
   last images that fall into it. Partitions are written only if their content changed.

Re-applying a batch (after a crash between partition writes) yields the same content: step 2
depends only on the batch, and step 3 removes every changed key before adding its final image.
The set logic runs in DuckDB over Arrow, so a batch of a million changes is a few queries.
"""

from __future__ import annotations

from collections.abc import Mapping

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ledger_assets.lib.lake.layout import LakeLayout, PartitionKey
from ledger_assets.lib.lake.schema import LOCAL_DATE, ROW_LSN, LakeTable
from ledger_assets.lib.lake.store import PartitionWrite, read_partitions, write_partition


class TruncateNotAppliedError(RuntimeError):
    """A TRUNCATE reached the lake: it fails closed instead of guessing which days to empty."""


class OldRowUnavailableError(RuntimeError):
    """An update or delete without its old row: the partition it leaves cannot be known."""


class UnknownTenantZoneError(LookupError):
    """A row belongs to a tenant whose time zone the lake does not know."""


def _local_date_sql(lake_table: LakeTable, row: str) -> str:
    day = lake_table.spec.day_column
    if lake_table.spec.day_kind == "local_date":
        return f"{row}.{day}"
    return f"cast(timezone(z.time_zone, {row}.{day}) as date)"


def _zones_table(zones: Mapping[int, str]) -> pa.Table:
    return pa.table(
        {
            "tenant_id": pa.array(list(zones), pa.int32()),
            "time_zone": pa.array(list(zones.values()), pa.string()),
        }
    )


def touched_partitions(con: duckdb.DuckDBPyConnection, lake_table: LakeTable) -> list[PartitionKey]:
    """Partitions named by the old and new rows of the registered ``changes``."""
    parts = [
        f"select c.{image}.tenant_id as tenant_id, {_local_date_sql(lake_table, f'c.{image}')} "  # noqa: S608
        "as local_date, z.tenant_id is null as zone_missing "
        f"from changes c left join zones z on z.tenant_id = c.{image}.tenant_id "
        f"where c.{image} is not null and c.{image}.tenant_id is not null"
        for image in ("old", "new")
    ]
    union = " union all ".join(parts)
    rows = con.execute(
        f"select distinct tenant_id, local_date, zone_missing from ({union})"  # noqa: S608
    ).fetchall()
    missing = sorted({int(t) for t, _, gone in rows if gone})
    if missing and lake_table.spec.day_kind == "instant":
        raise UnknownTenantZoneError(
            f"{lake_table.name}: no time zone for tenant(s) {missing}; the tenant rows must be "
            "in the system of record before their facts"
        )
    return sorted(PartitionKey(lake_table.name, int(t), d) for t, d, _ in rows)


def apply_changes(
    layout: LakeLayout,
    lake_table: LakeTable,
    zones: Mapping[int, str],
    changes: pa.Table,
) -> list[PartitionWrite]:
    """Apply one table's changes (change-log records) to the lake.

    Args:
        layout: the lake.
        lake_table: the table's lake schema.
        zones: tenant id -> IANA zone, for every tenant the changes mention.
        changes: change-log rows of this table (see ``cdc.changelog``), any order.

    Returns:
        One entry per touched partition, ``changed`` False where the content was unchanged.

    Raises:
        TruncateNotAppliedError: the batch holds a TRUNCATE of this table.
        UnknownTenantZoneError: a row's tenant has no known zone.
    """
    if changes.num_rows == 0:
        return []
    if pc.any(pc.equal(changes.column("op"), "truncate")).as_py():
        raise TruncateNotAppliedError(
            f"TRUNCATE of {lake_table.name} reached the change log; the lake will not guess "
            f"which days to empty: re-snapshot it (ledger lake resnapshot {lake_table.name})"
        )
    blind = pc.and_(
        pc.is_in(changes.column("op"), pa.array(["update", "delete"])),
        pc.not_equal(pc.fill_null(changes.column("old_kind"), "null"), "full"),
    )
    if pc.any(blind).as_py():
        raise OldRowUnavailableError(
            f"{lake_table.name}: an update or delete arrived without the full old row, so the "
            "partition it leaves is unknown; the table needs REPLICA IDENTITY FULL "
            "(see migration 0002), then a re-snapshot"
        )
    pk = lake_table.spec.primary_key
    con = duckdb.connect()
    try:
        con.execute("set TimeZone = 'UTC'")
        con.register("changes", changes)
        con.register("zones", _zones_table(zones))
        touched = touched_partitions(con, lake_table)
        current = read_partitions(layout, lake_table, touched)
        con.register("cur", current)
        con.execute(
            f"""
            create temp table last_images as
            with ordered as (
                select row_number() over (order by commit_lsn, seq) as ord, * from changes
            ), images as (
                select ord, new.{pk} as k, new as img, commit_lsn from ordered
                where op in ('insert', 'update')
                union all
                select ord, key as k, null as img, commit_lsn from ordered where op = 'delete'
                union all
                select ord, old.{pk} as k, null as img, commit_lsn from ordered
                where op = 'update' and old is not null and old.{pk} is distinct from new.{pk}
            )
            select k, img, commit_lsn from images
            qualify row_number() over (partition by k order by ord desc) = 1
            """  # noqa: S608 - identifiers come from the catalog, values are never formatted
        )
        result = con.execute(
            f"""
            select c.* from cur c anti join last_images l on c.{pk} = l.k
            union all by name
            select unnest(l.img), {_local_date_sql(lake_table, "l.img")} as {LOCAL_DATE},
                   cast(l.commit_lsn as bigint) as {ROW_LSN}
            from last_images l left join zones z on z.tenant_id = l.img.tenant_id
            where l.img is not null
            order by tenant_id, {LOCAL_DATE}
            """  # noqa: S608
        ).to_arrow_table()
    finally:
        con.close()
    return _write_touched(layout, lake_table, touched, result, current)


def _partition_bounds(rows: pa.Table) -> dict[tuple[int, object], tuple[int, int]]:
    """Row ranges per (tenant, local day) of ``rows``, which are sorted by those two."""
    tenants = rows.column("tenant_id").to_numpy(zero_copy_only=False)
    days = rows.column(LOCAL_DATE).to_pylist()
    bounds: dict[tuple[int, object], tuple[int, int]] = {}
    start = 0
    for i in range(1, rows.num_rows + 1):
        if i == rows.num_rows or tenants[i] != tenants[start] or days[i] != days[start]:
            bounds[(int(tenants[start]), days[start])] = (start, i)
            start = i
    return bounds


def _write_touched(
    layout: LakeLayout,
    lake_table: LakeTable,
    touched: list[PartitionKey],
    rows: pa.Table,
    current: pa.Table,
) -> list[PartitionWrite]:
    new_bounds = _partition_bounds(rows)
    current = current.sort_by([("tenant_id", "ascending"), (LOCAL_DATE, "ascending")])
    old_bounds = _partition_bounds(current)
    writes = []
    for key in touched:
        lo, hi = new_bounds.get((key.tenant_id, key.local_date), (0, 0))
        was_lo, was_hi = old_bounds.get((key.tenant_id, key.local_date), (0, 0))
        writes.append(
            write_partition(
                layout,
                lake_table,
                key,
                rows.slice(lo, hi - lo),
                current=current.slice(was_lo, was_hi - was_lo),
            )
        )
    return writes
