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
Everything is column-at-a-time: the last change per key is a hash aggregate over the keys and
change positions only (the row images are then gathered by position, never carried through a
sort or a hash table), the local days come from one DuckDB projection (``localday``), and the
new partition contents are Arrow filters, a concatenation and one sort.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ledger_assets.lib.lake.layout import LakeLayout, PartitionKey
from ledger_assets.lib.lake.localday import ZONE_CODE, local_date_sql, zone_code_of
from ledger_assets.lib.lake.schema import LOCAL_DATE, ROW_LSN, LakeTable
from ledger_assets.lib.lake.store import (
    PartitionWrite,
    conform_to_schema,
    read_partitions,
    write_partition,
)

#: Threads writing a batch's partitions (see ``_write_touched``).
_WRITERS = 4


class TruncateNotAppliedError(RuntimeError):
    """A TRUNCATE reached the lake: it fails closed instead of guessing which days to empty."""


class OldRowUnavailableError(RuntimeError):
    """An update or delete without its old row: the partition it leaves cannot be known."""


class UnknownTenantZoneError(LookupError):
    """A row belongs to a tenant whose time zone the lake does not know."""


def _local_dates(
    lake_table: LakeTable, zones: Mapping[int, str], images: pa.Array | pa.ChunkedArray
) -> pa.Table:
    """``tenant_id`` and ``local_date`` of every non-NULL row image, in order.

    Raises:
        UnknownTenantZoneError: an instant-dated table's row has a tenant without a zone (a
            table dated by a local date column needs no zone).
    """
    spec = lake_table.spec
    present = pc.filter(images, pc.is_valid(images))
    tenants = pc.struct_field(present, "tenant_id")
    if spec.day_kind == "local_date":
        return pa.table(
            {"tenant_id": tenants, LOCAL_DATE: pc.struct_field(present, spec.day_column)}
        )
    rows = pa.table(
        {
            "tenant_id": tenants,
            spec.day_column: pc.struct_field(present, spec.day_column),
            ZONE_CODE: zone_code_of(tenants, zones),
        }
    )
    day, params = local_date_sql(lake_table, zones, "r", ZONE_CODE)
    con = duckdb.connect()
    try:
        con.execute("set TimeZone = 'UTC'")
        con.register("r", rows)
        # A projection of one scan: DuckDB keeps the rows in order (preserve_insertion_order).
        days = con.execute(f"select {day} from r", params).to_arrow_table().column(0)  # noqa: S608
    finally:
        con.close()
    if rows.column(ZONE_CODE).null_count:
        missing = pc.unique(pc.filter(tenants, pc.is_null(rows.column(ZONE_CODE))))
        raise UnknownTenantZoneError(
            f"{lake_table.name}: no time zone for tenant(s) {sorted(missing.to_pylist())}; the"
            " tenant rows must be in the system of record before their facts"
        )
    return pa.table({"tenant_id": tenants, LOCAL_DATE: days})


def _partitions(lake_table: LakeTable, days: list[pa.Table]) -> list[PartitionKey]:
    pairs = pa.concat_tables(days).group_by(["tenant_id", LOCAL_DATE]).aggregate([])
    return sorted(
        PartitionKey(lake_table.name, int(t), d)
        for t, d in zip(
            pairs.column("tenant_id").to_pylist(), pairs.column(LOCAL_DATE).to_pylist(), strict=True
        )
        if t is not None and d is not None
    )


def touched_partitions(
    changes: pa.Table, lake_table: LakeTable, zones: Mapping[int, str]
) -> list[PartitionKey]:
    """Partitions named by the old and new rows of ``changes`` (change-log records)."""
    return _partitions(
        lake_table,
        [_local_dates(lake_table, zones, changes.column(image)) for image in ("old", "new")],
    )


def _change_order(changes: pa.Table) -> npt.NDArray[np.int64]:
    """Each change's rank in ``(commit_lsn, seq)`` order (the change log is usually in it)."""
    commit_lsn = changes.column("commit_lsn").to_numpy()
    seq = changes.column("seq").to_numpy()
    ordered = np.all(
        (commit_lsn[1:] > commit_lsn[:-1])
        | ((commit_lsn[1:] == commit_lsn[:-1]) & (seq[1:] > seq[:-1]))
    )
    if ordered:
        return np.arange(changes.num_rows, dtype=np.int64)
    rank = np.empty(changes.num_rows, np.int64)
    rank[np.lexsort((seq, commit_lsn))] = np.arange(changes.num_rows)
    return rank


def _last_changes(changes: pa.Table, pk: str) -> tuple[pa.Array, npt.NDArray[np.int64]]:
    """Every changed key, and the positions of the changes whose new image is a key's last.

    A key's last change is its latest in ``(commit_lsn, seq)`` order among: inserts and updates
    (an image under the new key), deletes (gone), and updates that changed the key (the old key
    is gone). At most one of these per key and change, so ``rank * 2 + is_image`` ranks them
    and its maximum per key says both which change won and whether it left an image.
    """
    op = changes.column("op")
    rank = _change_order(changes)
    is_image = pc.is_in(op, pa.array(["insert", "update"])).to_numpy(zero_copy_only=False)
    is_delete = pc.equal(op, "delete").to_numpy(zero_copy_only=False)
    new_key = pc.struct_field(changes.column("new"), pk)
    old_key = pc.struct_field(changes.column("old"), pk)
    moved = pc.fill_null(
        pc.and_(pc.equal(op, "update"), pc.not_equal(old_key, new_key)), False
    ).to_numpy(zero_copy_only=False)
    entries = pa.table(
        {
            "k": pa.chunked_array(
                [
                    *pc.filter(new_key, is_image).chunks,
                    *pc.filter(changes.column("key"), is_delete).chunks,
                    *pc.filter(old_key, moved).chunks,
                ],
                new_key.type,
            ),
            "r": np.concatenate([rank[is_image] * 2 + 1, rank[is_delete] * 2, rank[moved] * 2]),
        }
    )
    last = entries.group_by("k").aggregate([("r", "max")])
    won = last.column("r_max").to_numpy()
    at = np.empty(changes.num_rows, np.int64)
    at[rank] = np.arange(changes.num_rows)  # position of each rank
    return last.column("k"), at[won[won % 2 == 1] // 2]


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
    changes = changes.combine_chunks()
    changed_keys, last = _last_changes(changes, pk)
    old_days = _local_dates(lake_table, zones, changes.column("old"))
    new_days = _local_dates(lake_table, zones, changes.column("new"))
    touched = _partitions(lake_table, [old_days, new_days])
    # Every insert and update has a new image, so the n-th of them is the n-th new_days row.
    new_row = np.cumsum(pc.is_valid(changes.column("new")).to_numpy(zero_copy_only=False)) - 1
    images = pa.Table.from_struct_array(changes.column("new").take(last))
    images = images.append_column(LOCAL_DATE, new_days.column(LOCAL_DATE).take(new_row[last]))
    images = images.append_column(ROW_LSN, changes.column("commit_lsn").take(last).cast(pa.int64()))
    current = read_partitions(layout, lake_table, touched)
    gone = pc.is_in(current.column(pk), value_set=changed_keys.combine_chunks())
    kept = current.filter(pc.invert(gone))
    result = pa.concat_tables([kept, conform_to_schema(images, lake_table.schema)])
    # Sorted by partition, and within it by key: each partition's slice is in file order.
    order = [("tenant_id", "ascending"), (LOCAL_DATE, "ascending"), (pk, "ascending")]
    rows, current = result.sort_by(order), current.sort_by(order)
    return _write_touched(layout, lake_table, touched, rows, current)


def _partition_bounds(rows: pa.Table) -> dict[tuple[int, object], tuple[int, int]]:
    """Row ranges per (tenant, local day) of ``rows``, which are sorted by those two."""
    if rows.num_rows == 0:
        return {}
    tenants = rows.column("tenant_id").to_numpy()
    days = rows.column(LOCAL_DATE).cast(pa.int32()).to_numpy()
    cuts = np.flatnonzero((tenants[1:] != tenants[:-1]) | (days[1:] != days[:-1])) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [rows.num_rows]])
    keys = zip(
        tenants[starts].tolist(), rows.column(LOCAL_DATE).take(starts).to_pylist(), strict=True
    )
    return {key: (int(lo), int(hi)) for key, lo, hi in zip(keys, starts, ends, strict=True)}


def _write_touched(
    layout: LakeLayout,
    lake_table: LakeTable,
    touched: list[PartitionKey],
    rows: pa.Table,
    current: pa.Table,
) -> list[PartitionWrite]:
    new_bounds = _partition_bounds(rows)
    old_bounds = _partition_bounds(current)

    def write(key: PartitionKey) -> PartitionWrite:
        lo, hi = new_bounds.get((key.tenant_id, key.local_date), (0, 0))
        was_lo, was_hi = old_bounds.get((key.tenant_id, key.local_date), (0, 0))
        return write_partition(
            layout,
            lake_table,
            key,
            rows.slice(lo, hi - lo),
            current=current.slice(was_lo, was_hi - was_lo),
            in_file_order=True,
        )

    # Partitions are separate files: encoding (Arrow releases the GIL) and each file's fsyncs
    # overlap across threads instead of queueing one after another.
    with ThreadPoolExecutor(max_workers=_WRITERS, thread_name_prefix="lake-write") as pool:
        return list(pool.map(write, touched))
