"""Helpers for the CDC capture tests.

``replay`` applies a change log the simplest possible way (a dict per table, in change order)
and ``postgres_rows`` reads the same tables from Postgres, so a test can assert the change log
reproduces Postgres exactly, value for value and type for type.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pyarrow.parquet as pq

from ledger_assets.lib.cdc import CaptureConfig, ChangeCapture, Manifest, list_batches
from ledger_assets.lib.sor.catalog import MIRRORED_TABLES

JSON_COLUMNS = {"metadata", "fee_details"}
Row = dict[str, Any]


def started(config: CaptureConfig) -> None:
    """Create publication, slot and state (an empty lake)."""
    with ChangeCapture(config) as capture:
        capture.start()


def capture_all(config: CaptureConfig) -> list[Manifest]:
    with ChangeCapture(config) as capture:
        capture.start()
        return [r.manifest for r in capture.run()]


def execute(dsn: str, *statements: str, params: tuple[Any, ...] = ()) -> None:
    """Run statements, each in its own transaction (autocommit)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement, params or None)


def landed(config: CaptureConfig) -> list[Manifest]:
    return [ref.read() for ref in list_batches(config.changelog_dir)]


def change_rows(config: CaptureConfig, table: str) -> list[Row]:
    """Every change to ``table`` in the change log, in change order."""
    rows: list[Row] = []
    for manifest in landed(config):
        for change_file in manifest.files:
            if change_file.table == table:
                rows.extend(pq.read_table(config.changelog_dir / change_file.path).to_pylist())
    rows.sort(key=lambda r: (r["commit_lsn"], r["seq"]))
    return rows


def _normalize(row: Row) -> Row:
    return {
        k: json.loads(v) if k in JSON_COLUMNS and isinstance(v, str) else v for k, v in row.items()
    }


def replay(config: CaptureConfig) -> dict[str, dict[Any, Row]]:
    """Apply the whole change log to empty tables; return table -> key -> row."""
    tables: dict[str, dict[Any, Row]] = {t.name: {} for t in MIRRORED_TABLES}
    for table in tables:
        state = tables[table]
        for change in change_rows(config, table):
            op = change["op"]
            if op == "truncate":
                state.clear()
                continue
            if change["old"] is not None and op in ("update", "delete"):
                state.pop(change["old"][next(iter_pk(table))], None)
            if op in ("insert", "update"):
                state[change["key"]] = _normalize(change["new"])
    return tables


def iter_pk(table: str) -> Iterator[str]:
    yield next(t.primary_key for t in MIRRORED_TABLES if t.name == table)


def postgres_rows(dsn: str) -> dict[str, dict[Any, Row]]:
    """The mirrored tables as Postgres holds them, typed by psycopg."""
    out: dict[str, dict[Any, Row]] = {}
    with psycopg.connect(dsn, row_factory=psycopg.rows.dict_row) as conn:
        conn.execute("set timezone = 'UTC'")
        for table in MIRRORED_TABLES:
            rows = conn.execute(f"select * from ledger.{table.name}").fetchall()
            out[table.name] = {r[table.primary_key]: _normalize(dict(r)) for r in rows}
    return out


def assert_lake_equals_postgres(config: CaptureConfig) -> None:
    lake, pg = replay(config), postgres_rows(config.dsn)
    for table in pg:
        assert lake[table] == pg[table], table
