"""Arrow schemas of the lake tables, derived from the Postgres catalog.

The column types are the change log's (``cdc.pgtypes``), so a row decoded from WAL and a row
read by a snapshot land in the same Parquet types: integers as integers, numeric(p,s) as
decimal128(p,s), timestamptz as UTC microseconds, JSON as its exact text. Two columns are added:
``local_date`` (the partition's day, stored so queries never convert zones per row) and
``_lsn`` (the WAL position of the change that last wrote the row; 0 for snapshot rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import pyarrow as pa

from ledger_assets.lib.cdc.pgoutput import RelationColumn
from ledger_assets.lib.cdc.pgtypes import column_type
from ledger_assets.lib.sor.catalog import SCHEMA, MirroredTable

LOCAL_DATE = "local_date"
ROW_LSN = "_lsn"


@dataclass(frozen=True)
class LakeTable:
    spec: MirroredTable
    #: The Postgres columns, in table order.
    source: pa.Schema

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def schema(self) -> pa.Schema:
        """The Parquet schema: the Postgres columns, then local_date and _lsn."""
        return self.source.append(pa.field(LOCAL_DATE, pa.date32(), nullable=False)).append(
            pa.field(ROW_LSN, pa.int64(), nullable=False)
        )

    @property
    def columns(self) -> list[str]:
        return list(self.source.names)


def load_lake_table(conn: psycopg.Connection[tuple[object, ...]], spec: MirroredTable) -> LakeTable:
    """Read ``spec``'s columns from the catalog and map them to Arrow types."""
    rows = conn.execute(
        """
        select a.attname, a.atttypid::int, a.atttypmod, a.attnotnull
        from pg_attribute a
        where a.attrelid = (%s || '.' || %s)::regclass and a.attnum > 0 and not a.attisdropped
        order by a.attnum
        """,
        (SCHEMA, spec.name),
    ).fetchall()
    if not rows:
        raise LookupError(f"table {SCHEMA}.{spec.name} does not exist")
    fields = []
    for name, oid, typmod, not_null in rows:
        column = RelationColumn(
            str(name), int(str(oid)), int(str(typmod)), name == spec.primary_key
        )
        arrow = column_type(column, spec.name).arrow
        fields.append(pa.field(str(name), arrow, nullable=not bool(not_null)))
    return LakeTable(spec, pa.schema(fields))
