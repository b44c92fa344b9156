"""Rebuild one lake partition straight from Postgres (the repair and backfill path)."""

from __future__ import annotations

from datetime import date

import psycopg
import pyarrow as pa
from psycopg import sql

from ledger_assets.lib.lake.compact import table_lock
from ledger_assets.lib.lake.layout import LakeLayout, PartitionKey
from ledger_assets.lib.lake.schema import LOCAL_DATE, ROW_LSN, LakeTable
from ledger_assets.lib.lake.store import PartitionWrite, write_partition
from ledger_assets.lib.localtime import day_window
from ledger_assets.lib.sor.catalog import SCHEMA


def partition_rows_from_postgres(
    conn: psycopg.Connection[tuple[object, ...]], lake_table: LakeTable, tenant_id: int, day: date
) -> pa.Table:
    """The rows of (tenant, local day) as Postgres has them now, in the lake's schema."""
    spec = lake_table.spec
    columns = sql.SQL(", ").join(
        # JSON is kept as its exact text; psycopg would otherwise parse it.
        sql.SQL("{}::text").format(sql.Identifier(f.name))
        if f.type == pa.string()
        else sql.Identifier(f.name)
        for f in lake_table.source
    )
    if spec.day_kind == "local_date":
        where = sql.SQL("{} = %s").format(sql.Identifier(spec.day_column))
        params: tuple[object, ...] = (tenant_id, day)
    else:
        zone_row = conn.execute(
            "select time_zone from ledger.tenants where tenant_id = %s", (tenant_id,)
        ).fetchone()
        if zone_row is None:
            raise LookupError(f"tenant {tenant_id} is not in the system of record")
        start, end = day_window(day, str(zone_row[0]))
        where = sql.SQL("{col} >= %s and {col} < %s").format(col=sql.Identifier(spec.day_column))
        params = (tenant_id, start, end)
    query = sql.SQL("select {} from {} where tenant_id = %s and {}").format(
        columns, sql.Identifier(SCHEMA, spec.name), where
    )
    with conn.cursor() as cur:
        cur.execute(query, params)
        rows = cur.fetchall()
    data = {name: [r[i] for r in rows] for i, name in enumerate(lake_table.columns)}
    data[LOCAL_DATE] = [day] * len(rows)
    data[ROW_LSN] = [0] * len(rows)
    return pa.table(data, schema=lake_table.schema)


def rebuild_partition(
    conn: psycopg.Connection[tuple[object, ...]],
    layout: LakeLayout,
    lake_table: LakeTable,
    tenant_id: int,
    day: date,
) -> PartitionWrite:
    """Replace (tenant, day) of ``lake_table`` with what Postgres holds now."""
    rows = partition_rows_from_postgres(conn, lake_table, tenant_id, day)
    with table_lock(layout, lake_table.name):
        return write_partition(
            layout, lake_table, PartitionKey(lake_table.name, tenant_id, day), rows
        )
