"""``seed_load``: generator + binary COPY rate vs. row-by-row INSERTs of the same kind of data.

The baseline loads a proportionally small slice (``--baseline-rows``, same days, fewer
tenants) with ``executemany`` of single-row parameterized INSERTs in one transaction per table,
FK checks on: what an application does without COPY. Rates are compared, not times.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql

from bench.core import Context, Figure, cpu_spent, workload
from ledger_assets.lib.synth.generate import TABLES, Batch, Generator
from ledger_assets.lib.synth.load import SEED_TABLES, SeedSpec, seed_database
from ledger_assets.lib.synth.pgcopy import Kind

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _python_column(kind: Kind, raw: Any) -> list[Any]:
    """One generated column as Python values, as an application would hold them."""
    match kind:
        case Kind.INT4 | Kind.INT8 | Kind.BOOL:
            return list(np.asarray(raw).tolist())
        case Kind.TIMESTAMPTZ:
            return [_EPOCH + timedelta(seconds=s) for s in np.asarray(raw).tolist()]
        case Kind.DATE:
            return [(_EPOCH + timedelta(days=d)).date() for d in np.asarray(raw).tolist()]
        case Kind.FIXED_TEXT:
            return [bytes(row).decode() for row in np.asarray(raw)]
        case Kind.NUMERIC_E4:
            from decimal import Decimal

            return [Decimal(v).scaleb(-4) for v in np.asarray(raw).tolist()]
        case Kind.TEXT | Kind.JSONB | Kind.TEXT_ARRAY:
            assert isinstance(raw, pa.Array)
            values: list[Any] = raw.to_pylist()
            return values
        case Kind.NULLABLE_FIXED_TEXT:
            values, valid = raw
            return [bytes(r).decode() if ok else None for r, ok in zip(values, valid, strict=True)]
        case Kind.NULLABLE_TIMESTAMPTZ:
            values, valid = raw
            return [
                _EPOCH + timedelta(seconds=int(s)) if ok else None
                for s, ok in zip(values, valid, strict=True)
            ]
        case Kind.NULLABLE_DATE:
            values, valid = raw
            return [
                (_EPOCH + timedelta(days=int(d))).date() if ok else None
                for d, ok in zip(values, valid, strict=True)
            ]
    raise AssertionError(kind)


def _rows(batch: Batch) -> list[tuple[Any, ...]]:
    columns = [_python_column(c.kind, batch.values[c.name]) for c in TABLES[batch.table]]
    return list(zip(*columns, strict=True))


def _insert_baseline(dsn: str, spec: SeedSpec) -> tuple[int, float]:
    """Row-by-row INSERTs of ``spec``'s data; returns (rows, seconds of inserting)."""
    batches = list(Generator(spec).batches())
    rows = {t: [r for b in batches if b.table == t for r in _rows(b)] for t in SEED_TABLES}
    total, seconds = 0, 0.0
    with psycopg.connect(dsn) as conn:
        for table in SEED_TABLES:
            columns = TABLES[table]
            statement = sql.SQL("insert into {}.{} ({}) values ({})").format(
                sql.Identifier("ledger"),
                sql.Identifier(table),
                sql.SQL(", ").join(sql.Identifier(c.name) for c in columns),
                sql.SQL(", ").join(sql.Placeholder() * len(columns)),
            )
            started = time.perf_counter()
            with conn.cursor() as cur:
                cur.executemany(statement, rows[table])
            conn.commit()
            seconds += time.perf_counter() - started
            total += len(rows[table])
    return total, seconds


@workload("seed_load")
def seed_load(ctx: Context) -> list[Figure]:
    opts = ctx.options
    spec = SeedSpec.scale(opts.rows, tenants=opts.tenants, years=opts.years, seed=opts.seed)
    share = min(1.0, opts.baseline_rows / opts.rows)
    slice_spec = replace(
        spec, tenants=max(1, round(spec.tenants * share)), target_rows=opts.baseline_rows
    )
    with ctx.fresh_database("insert") as dsn:
        base_rows, base_seconds = _insert_baseline(dsn, slice_spec)
    base_rate = base_rows / base_seconds
    with ctx.fresh_database("copy") as dsn, cpu_spent(dsn) as cpu:
        # Without the ANALYZE that follows a real seed: not part of the load being timed.
        report = seed_database(dsn, spec, analyze=False)
    figures = [
        Figure("rows loaded", report.total_rows, "rows"),
        Figure(
            "seconds to committed (generate+COPY+indexes)",
            report.seconds,
            "s",
            higher_is_better=False,
        ),
        Figure("rows/s overall", report.rows_per_second, "rows/s", base_rate),
    ]
    figures += [
        Figure(f"rows/s {load.table} (busy)", load.rows_per_second, "rows/s")
        for load in report.tables.values()
        if load.rows >= 1000
    ]
    figures.append(
        Figure(
            "200M rows at this rate (extrapolated)",
            200e6 / report.rows_per_second / 60,
            "min",
            higher_is_better=False,
        )
    )
    # Where the time goes, independent of load on the machine: CPU per row on each side, and
    # the least time 200M rows could take on this machine's cores if the other side were free.
    cores = os.cpu_count() or 1
    per_row = {"client (generate, encode)": cpu.client, "server (COPY, indexes)": cpu.server}
    for side, seconds in per_row.items():
        if seconds is not None:
            figures.append(Figure(f"CPU per row, {side}", seconds / report.total_rows * 1e6, "us"))
    if cpu.server is not None:
        figures.append(
            Figure(
                f"200M rows: server CPU alone on {cores} cores (a floor)",
                cpu.server / report.total_rows * 200e6 / cores / 60,
                "min",
                higher_is_better=False,
            )
        )
    return figures
