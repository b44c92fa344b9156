"""Read and replace lake partitions.

A partition file is written deterministically — rows sorted by primary key, fixed writer
options, no timestamps or LSNs in the file — so the same content always produces the same
bytes. Its SHA-256 is therefore a content hash: a rewrite that would not change the content is
skipped, and every untouched partition stays byte-identical.

Replacing a partition keeps its previous content as a version (``lib/lake/versions.py``), so the
lake can still be read as of an earlier source position.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ledger_assets.lib.lake.layout import LakeLayout, PartitionKey
from ledger_assets.lib.lake.schema import LOCAL_DATE, ROW_LSN, LakeTable
from ledger_assets.lib.lake.versions import keep_version

#: Rows per row group. Small enough that a base file (every tenant of a day, sorted by tenant)
#: lets a one-tenant read skip most of the file by row-group statistics.
ROW_GROUP_ROWS = 16_384


@dataclass(frozen=True)
class PartitionWrite:
    key: PartitionKey
    rows: int
    content_sha256: str
    #: False when the partition already held exactly this content (nothing was written).
    changed: bool
    #: The distinct commit LSNs (``_lsn``, snapshot rows' 0 left out) of the rows it now holds,
    #: ascending: which transactions this content comes from (lineage of a rewrite).
    lsns: tuple[int, ...] = ()


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression="zstd",
        compression_level=1,
        row_group_size=ROW_GROUP_ROWS,
        write_statistics=True,
        store_schema=True,
    )
    return bytes(sink.getvalue().to_pybytes())


def write_partition(
    layout: LakeLayout,
    lake_table: LakeTable,
    key: PartitionKey,
    rows: pa.Table,
    current: pa.Table | None = None,
    *,
    in_file_order: bool = False,
) -> PartitionWrite:
    """Replace partition ``key`` with ``rows`` (an overlay file), unless nothing changed.

    The content it replaces is kept as a version first (see ``versions.keep_version``).
    ``current``, when the caller has already read the partition's rows, saves reading them
    again from its day's base file (a DuckDB connection per partition, most of a large apply).
    ``in_file_order`` says that ``rows`` and ``current`` are already in the file's column order
    and types and sorted by primary key (see ``_ordered``), which saves sorting them again.
    """
    ordered = rows if in_file_order else _ordered(lake_table, rows)
    data = parquet_bytes(ordered)
    digest = hashlib.sha256(data).hexdigest()
    lsns = tuple(sorted(int(v) for v in pc.unique(ordered.column(ROW_LSN)).to_pylist() if v))
    path = layout.overlay_file(key)
    if path.exists():
        previous, since_ns = path.read_bytes(), path.stat().st_mtime_ns
        if hashlib.sha256(previous).hexdigest() == digest:
            return PartitionWrite(key, ordered.num_rows, digest, changed=False, lsns=lsns)
        keep_version(layout, key, lambda: previous, since_ns)
    else:
        if current is None:
            current = read_partitions(layout, lake_table, [key])
        was = current if in_file_order else _ordered(lake_table, current)
        # Same schema, same order: equal tables are equal files, so the content is compared
        # without encoding it; it is encoded only if a version of it is kept.
        if was.equals(ordered):
            return PartitionWrite(key, ordered.num_rows, digest, changed=False, lsns=lsns)
        base = layout.base_file(key.table, key.local_date)
        # A base file's time says when its content arrived only where compaction can back-date
        # it (locally). S3 cannot, so its base content counts as old: replacing it keeps a
        # version whenever a report has been published (base days are old days: rarely hit).
        since_ns = base.stat().st_mtime_ns if base.exists() and base.is_local else 0
        keep_version(layout, key, lambda: parquet_bytes(was), since_ns)
    path.write_bytes(data)
    return PartitionWrite(key, ordered.num_rows, digest, changed=True, lsns=lsns)


def _ordered(lake_table: LakeTable, rows: pa.Table) -> pa.Table:
    """``rows`` in the file's column order and types, sorted by key (deterministic bytes)."""
    ordered = rows.select(lake_table.schema.names).cast(lake_table.schema)
    return ordered.sort_by([(lake_table.spec.primary_key, "ascending")])


def conform_to_schema(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """``rows`` in ``schema``'s column order and types; columns it lacks become NULL.

    Files written before a column was added to the published table lack that column (capture
    follows an added column; a dropped or retyped one fails closed there). Any other difference
    is an error from the cast.
    """
    for field in schema:
        if field.name not in rows.column_names:
            rows = rows.append_column(field, pa.nulls(rows.num_rows, field.type))
    return rows.select(schema.names).cast(schema)


def read_partitions(
    layout: LakeLayout, lake_table: LakeTable, keys: list[PartitionKey]
) -> pa.Table:
    """The current rows of ``keys``: each partition's overlay, else its slice of the base."""
    overlays = [layout.overlay_file(k) for k in keys if layout.overlay_file(k).exists()]
    from_base: dict[date, list[int]] = {}
    for key in keys:
        if (
            not layout.overlay_file(key).exists()
            and layout.base_file(key.table, key.local_date).exists()
        ):
            from_base.setdefault(key.local_date, []).append(key.tenant_id)
    parts: list[pa.Table] = []
    if overlays:
        parts.append(
            pq.read_table(
                [p.path for p in overlays], schema=lake_table.schema, filesystem=layout.path.fs
            )
        )
    if from_base:
        con = duckdb.connect()
        layout.path.configure_duckdb(con)
        for day, tenants in from_base.items():
            base = layout.base_file(lake_table.name, day).uri
            # Row-group statistics on tenant_id let DuckDB skip other tenants' row groups.
            part = con.execute(
                "select * from read_parquet(?) where tenant_id = any(?)", [base, tenants]
            ).to_arrow_table()
            parts.append(conform_to_schema(part, lake_table.schema))
        con.close()
    if not parts:
        return lake_table.schema.empty_table()
    return pa.concat_tables(parts)


def partition_keys_of(table_name: str, rows: pa.Table) -> set[PartitionKey]:
    """The partitions ``rows`` (with tenant_id and local_date columns) fall into."""
    pairs = zip(
        rows.column("tenant_id").to_pylist(), rows.column(LOCAL_DATE).to_pylist(), strict=True
    )
    return {PartitionKey(table_name, int(t), d) for t, d in pairs}
