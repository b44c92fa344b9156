"""One reconciliation cycle: totals in Postgres and in the lake, pinned, compared, drilled down.

See the package docstring for the pinning argument; the steps below follow it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql

from ledger_assets.lib.cdc.capture import CaptureConfig
from ledger_assets.lib.cdc.lsn import Lsn
from ledger_assets.lib.lake.compact import table_lock
from ledger_assets.lib.lake.drift import FileWatch, drift_between, lake_file_stats
from ledger_assets.lib.lake.layout import LakeLayout, PartitionKey
from ledger_assets.lib.lake.reader import create_lake_view
from ledger_assets.lib.lake.repair import partition_rows_from_postgres
from ledger_assets.lib.lake.schema import LakeTable
from ledger_assets.lib.lake.storage import FileStat
from ledger_assets.lib.lake.store import read_partitions
from ledger_assets.lib.lake.sync import lake_tables, read_lake_state, tenant_zones
from ledger_assets.lib.localtime import day_window
from ledger_assets.lib.reconcile.inflight import ChangeWindow, ensure_captured, open_snapshot
from ledger_assets.lib.reconcile.report import (
    GROUPS,
    Comparison,
    IdentityViolation,
    Mismatch,
    ReconcileScope,
    ReconciliationReport,
    Status,
    Totals,
    json_safe,
)
from ledger_assets.lib.reconcile.specs import SPECS, MeasureSpec
from ledger_assets.lib.reconcile.state import (
    IncrementalState,
    Partition,
    lake_days,
    read_incremental_state,
    state_path,
    sweep_slice,
    write_incremental_state,
)
from ledger_assets.lib.sor.catalog import SCHEMA

#: Both sides' aggregates: one row per (tenant, day, currency, category), as the queries of
#: ``_select`` return them.
TOTALS = pa.schema(
    [
        pa.field("tenant_id", pa.int32()),
        pa.field("local_date", pa.date32()),
        pa.field("currency", pa.string()),
        pa.field("category", pa.string()),
        pa.field("n", pa.int64()),
        pa.field("amount", pa.int64()),
        pa.field("fee", pa.int64()),
        pa.field("net", pa.int64()),
        pa.field("delta", pa.decimal128(38, 6)),
    ]
)
#: Mismatching partitions drilled down to keys per cycle; the rest keep their totals only.
DRILLDOWN_PARTITIONS = 20
SAMPLES_PER_KIND = 3
KEYS_PER_KIND = 100


@dataclass
class _Plan:
    """Per table, the (tenant, day) pairs to compare; None compares every partition."""

    partitions: dict[str, set[tuple[int, date]]] | None
    state: IncrementalState | None = None
    #: The lake's file stats as this cycle found them (incremental cycles), saved with its state.
    files: dict[str, FileStat] | None = None


@dataclass
class _Outcome:
    groups: list[pa.Table] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)
    violations: list[IdentityViolation] = field(default_factory=list)
    deferred: set[Partition] = field(default_factory=set)
    checked: set[Partition] = field(default_factory=set)
    rows: int = 0
    in_flight: int = 0
    delta: dict[str, float] = field(default_factory=dict)
    pg_seconds: float = 0.0
    lake_seconds: float = 0.0


def reconcile(
    capture: CaptureConfig,
    layout: LakeLayout,
    state_dir: Path,
    scope: ReconcileScope,
    *,
    capture_timeout: float = 30.0,
    sweep_cycles: int = 96,
) -> ReconciliationReport:
    """Compare the lake with Postgres over ``scope``; see the package docstring.

    Args:
        capture: the system of record (``dsn``) and its change log (``changelog_dir``).
        layout: the lake.
        state_dir: where the incremental state lives (``reconciliation/incremental.json``).
        scope: which partitions to compare.
        capture_timeout: how long to wait for the change log to reach the Postgres snapshot;
            past it the cycle reports ``deferred``.
        sweep_cycles: incremental cycles per full rolling sweep of every day.
    """
    run_id = uuid.uuid4().hex
    lake_state = read_lake_state(layout)
    if lake_state.seeding or lake_state.applied_end is None:
        return _empty(run_id, "skipped", "the lake is seeding: nothing is judged until it is not")
    w0 = lake_state.applied_end
    conn, s = open_snapshot(capture.dsn)
    try:
        zones = tenant_zones(conn)
        tables = lake_tables(conn)
        scales = _scales(conn)
        plan = _plan(scope, state_dir, layout, capture, tables, zones, w0, sweep_cycles)
        if not ensure_captured(capture, s, capture_timeout):
            return _empty(
                run_id,
                "deferred",
                f"the change log did not reach the Postgres snapshot ({s}) within "
                f"{capture_timeout:g} s; nothing was judged",
                str(w0),
                str(s),
            )
        window = ChangeWindow(capture.changelog_dir, tables, zones, after=w0)
        outcome = _Outcome()
        lake = duckdb.connect()
        try:
            lake.execute("set TimeZone = 'UTC'")
            _materialize(lake, "scales", _scales_table(scales))
            # One worker runs each table's Postgres aggregate on the snapshot connection while
            # this thread reads the lake (2 cores: a Postgres backend and DuckDB at once): the
            # first table's during the lake-only identities, each next one's during that
            # table's lake aggregate. The connection is idle again before it is used here.
            with ThreadPoolExecutor(max_workers=1) as postgres:

                def submit(name: str) -> Future[tuple[pa.Table, float]]:
                    parts = None if plan.partitions is None else plan.partitions[name]
                    return postgres.submit(
                        _postgres_totals, conn, SPECS[name], parts, zones, scales
                    )

                began = time.monotonic()
                swept = _swept_days(conn, plan, zones)
                outcome.pg_seconds += time.monotonic() - began
                names = list(tables)
                totals = submit(names[0])
                _check_identities(lake, layout, tables, plan, swept, window, outcome)
                for i, name in enumerate(names):
                    if i:
                        totals = submit(name)
                    parts = None if plan.partitions is None else plan.partitions[name]
                    _compare_table(
                        conn, lake, layout, tables[name], zones, scales, parts, totals, window,
                        outcome,
                    )  # fmt: skip
        finally:
            lake.close()
    finally:
        conn.close()
    for name in tables:
        outcome.in_flight += len(window.keys(name))
        outcome.deferred.update(
            (k.table, k.tenant_id, k.local_date) for k in window.partitions(name)
        )
    status: Status = "fail" if outcome.mismatches or outcome.violations else "pass"
    reason = (
        f"{len(outcome.mismatches)} mismatching group(s), "
        f"{len(outcome.violations)} identity violation(s)"
        if status == "fail"
        else f"{len(outcome.checked)} partition(s) equal to the cent"
    )
    report = ReconciliationReport(
        run_id=run_id,
        status=status,
        reason=reason,
        watermark=str(w0),
        postgres_lsn=str(s),
        partitions_checked=len(outcome.checked),
        rows_compared=outcome.rows,
        keys_in_flight=outcome.in_flight,
        mismatches=tuple(outcome.mismatches),
        identity_violations=tuple(outcome.violations),
        rounding_delta=outcome.delta,
        deferred=frozenset(outcome.deferred),
        postgres_seconds=outcome.pg_seconds,
        lake_seconds=outcome.lake_seconds,
        groups=pa.concat_tables(outcome.groups) if outcome.groups else GROUPS.empty_table(),
        checked=frozenset(outcome.checked),
    )
    _record(state_dir, scope, plan, report, w0)
    return report


def _empty(
    run_id: str, status: Status, reason: str, watermark: str = "", lsn: str = ""
) -> ReconciliationReport:
    return ReconciliationReport(
        run_id, status, reason, watermark, lsn, 0, 0, 0, (), (), {}, frozenset(), 0.0, 0.0
    )


# ------------------------------------------------------------------------------------ scope


def _plan(
    scope: ReconcileScope,
    state_dir: Path,
    layout: LakeLayout,
    capture: CaptureConfig,
    tables: Mapping[str, LakeTable],
    zones: Mapping[int, str],
    w0: Lsn,
    sweep_cycles: int,
) -> _Plan:
    if scope.kind == "full":
        return _Plan(None)
    if scope.kind == "partitions":
        return _Plan({name: set(scope.partitions) for name in tables})
    state = read_incremental_state(state_dir) or IncrementalState()
    parts: dict[str, set[tuple[int, date]]] = {name: set() for name in tables}
    last = None if state.last_watermark is None else Lsn.parse(state.last_watermark)
    if last is not None and last < w0:
        # Changes applied since the last cycle: compare the partitions they touched.
        since = ChangeWindow(capture.changelog_dir, tables, zones, after=last, upto=w0)
        for name in tables:
            parts[name].update((k.tenant_id, k.local_date) for k in since.partitions(name))
    for table, tenant, day in state.pending:
        if table in parts:
            parts[table].add((tenant, day))
    # Files changed by anything but CDC (an edited, truncated or deleted Parquet file) change
    # no change-log entry; their stats do, so such damage is compared in the next cycle.
    files = lake_file_stats(layout, list(tables))
    before = FileWatch(_files_path(state_dir)).load()
    if before is not None:
        drift = drift_between(before, files)
        for table, day in drift.days:
            if table in parts:
                parts[table] |= {(tenant, day) for tenant in zones}
        for table, tenant, day in drift.partitions:
            if table in parts:
                parts[table].add((tenant, day))
    days = sweep_slice(state, lake_days(layout, list(tables)), sweep_cycles)
    swept = {(tenant, day) for tenant in zones for day in days}
    for name in tables:
        parts[name] |= swept
    return _Plan(parts, state, files)


def _files_path(state_dir: Path) -> Path:
    return state_path(state_dir).with_name("lake_files.json")


def _record(
    state_dir: Path, scope: ReconcileScope, plan: _Plan, report: ReconciliationReport, w0: Lsn
) -> None:
    failed = report.mismatched_partitions()
    if scope.kind == "incremental":
        state = plan.state or IncrementalState()
        state.last_watermark = str(w0)
        state.pending = set(report.deferred) | failed
        write_incremental_state(state_dir, state)
        if plan.files is not None:
            FileWatch(_files_path(state_dir)).save(plan.files)
        return
    existing = read_incremental_state(state_dir)
    if existing is None:
        return
    passed = report.checked - failed - report.deferred
    existing.pending -= passed
    write_incremental_state(state_dir, existing)


def _windows(
    spec: MeasureSpec, parts: Iterable[tuple[int, date]], zones: Mapping[int, str]
) -> tuple[list[int], list[object], list[object]]:
    """Per tenant, runs of consecutive days merged into one half-open window."""
    by_tenant: dict[int, list[date]] = {}
    for tenant, day in parts:
        by_tenant.setdefault(tenant, []).append(day)
    tenants: list[int] = []
    lows: list[object] = []
    highs: list[object] = []
    for tenant, days in sorted(by_tenant.items()):
        runs: list[list[date]] = []
        for day in sorted(set(days)):
            if runs and day == runs[-1][1] + timedelta(days=1):
                runs[-1][1] = day
            else:
                runs.append([day, day])
        for first, last in runs:
            tenants.append(tenant)
            if spec.table.day_kind == "local_date":
                lows.append(first)
                highs.append(last + timedelta(days=1))
            else:
                lows.append(day_window(first, zones[tenant])[0])
                highs.append(day_window(last, zones[tenant])[1])
    return tenants, lows, highs


# --------------------------------------------------------------------------------- postgres


def _scales(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, int]:
    rows = conn.execute("select code, exponent from ledger.currencies").fetchall()
    return {str(code): 10 ** int(str(exp)) for code, exp in rows}


def _scales_table(scales: Mapping[str, int]) -> pa.Table:
    return pa.table(
        {"code": pa.array(list(scales), pa.string()), "scale": pa.array(list(scales.values()))}
    )


def _select(spec: MeasureSpec, day: str) -> str:
    """The columns of ``TOTALS``, typed alike in Postgres and DuckDB (sums overflow loudly)."""
    return (
        f"select t.tenant_id, {day} as local_date, t.currency, {spec.category} as category, "
        f"count(*) as n, cast(sum({spec.amount}) as bigint) as amount, "
        f"cast(sum({spec.fee}) as bigint) as fee, cast(sum({spec.net}) as bigint) as net, "
        f"cast(sum({spec.delta}) as numeric(38, 6)) as delta"
    )


def _postgres_query(spec: MeasureSpec, *, windows: bool, keys: bool) -> sql.Composed:
    table = spec.table
    day = (
        f"t.{table.day_column}"
        if table.day_kind == "local_date"
        else f"(t.{table.day_column} at time zone z.time_zone)::date"
    )
    source = sql.SQL(" from {} t").format(sql.Identifier(SCHEMA, table.name))
    if windows:
        # Each window reads its rows by one index range. As a plain join the planner pairs the
        # index with the tenants join instead (``tenant_id = z.tenant_id``) and reads every
        # row of each tenant; the lateral subquery, kept apart by ``offset 0``, prevents that.
        bound = "date" if table.day_kind == "local_date" else "timestamptz"
        source = sql.SQL(
            " from unnest(%(tenants)s::int4[], %(lows)s::{bound}[], %(highs)s::{bound}[])"
            " as w(tenant_id, lo, hi) cross join lateral (select * from {table} r"
            " where r.tenant_id = w.tenant_id and r.{col} >= w.lo and r.{col} < w.hi"
            " offset 0) t"
        ).format(
            bound=sql.SQL(bound),
            table=sql.Identifier(SCHEMA, table.name),
            col=sql.Identifier(table.day_column),
        )
    parts: list[sql.Composable] = [
        sql.SQL(_select(spec, day)),  # constant expressions of specs.py
        source,
    ]
    if table.day_kind == "instant":
        parts.append(sql.SQL(" join ledger.tenants z on z.tenant_id = t.tenant_id"))
    if spec.needs_scale:
        parts.append(
            sql.SQL(
                " join unnest(%(codes)s::text[], %(scales)s::int8[]) as c(code, scale)"
                " on c.code = t.currency"
            )
        )
    if keys:
        parts.append(
            sql.SQL(" where t.{} = any(%(keys)s::text[])").format(sql.Identifier(table.primary_key))
        )
    parts.append(sql.SQL(" group by 1, 2, 3, 4"))
    return sql.Composed(parts)


def _read_totals(data: bytes) -> pa.Table:
    if not data:
        return TOTALS.empty_table()
    return pacsv.read_csv(
        pa.BufferReader(data),
        read_options=pacsv.ReadOptions(column_names=TOTALS.names),
        convert_options=pacsv.ConvertOptions(
            column_types=dict(zip(TOTALS.names, TOTALS.types, strict=True))
        ),
    )


def _postgres_totals(
    conn: psycopg.Connection[tuple[object, ...]],
    spec: MeasureSpec,
    parts: set[tuple[int, date]] | None,
    zones: Mapping[int, str],
    scales: Mapping[str, int],
    keys: set[str] | None = None,
) -> tuple[pa.Table, float]:
    """``TOTALS`` of the snapshot over ``parts`` (or of the rows of ``keys``); and its seconds.

    The groups travel as CSV through ``COPY ... TO STDOUT`` into Arrow: a full cycle moves
    about a million of them, which as Python tuples cost more than the query itself.
    """
    began = time.monotonic()
    params: dict[str, object] = {"codes": list(scales), "scales": list(scales.values())}
    windowed = parts is not None and keys is None
    if windowed:
        assert parts is not None
        if not parts:
            return TOTALS.empty_table(), 0.0
        params["tenants"], params["lows"], params["highs"] = _windows(spec, parts, zones)
    if keys is not None:
        if not keys:
            return TOTALS.empty_table(), 0.0
        params["keys"] = sorted(keys)
    query = _postgres_query(spec, windows=windowed, keys=keys is not None)
    data = bytearray()
    with conn.cursor().copy(
        sql.SQL("copy ({}) to stdout (format csv)").format(query), params
    ) as copy:
        for chunk in copy:
            data += chunk
    return _read_totals(bytes(data)), time.monotonic() - began


# ------------------------------------------------------------------------------------- lake


def _materialize(lake: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> None:
    """Copy an Arrow table into a DuckDB temp table.

    Joins against a registered Arrow table fail when DuckDB pushes a bloom filter into the
    Arrow scan ("BLOOM_FILTER is not currently supported in PyArrow Scans").
    """
    lake.register("__arrow_source", table)
    try:
        lake.execute(f"create or replace temp table {name} as select * from __arrow_source")  # noqa: S608 - our own name
    finally:
        lake.unregister("__arrow_source")


@contextmanager
def _locked(layout: LakeLayout, names: Iterable[str]) -> Iterator[None]:
    """Hold the writer locks of ``names`` (sorted, so two holders never wait on each other)."""
    with ExitStack() as stack:
        for name in sorted(set(names)):
            stack.enter_context(table_lock(layout, name))
        yield


def _days_of(parts: set[tuple[int, date]] | None) -> set[date] | None:
    """The days whose files hold ``parts`` (None: every file)."""
    return None if parts is None else {day for _, day in parts}


def _register_scope(
    lake: duckdb.DuckDBPyConnection, name: str, parts: set[tuple[int, date]] | None
) -> tuple[str, list[object]]:
    """A clause restricting alias ``t`` to ``parts``, and its parameters (none: everything)."""
    if parts is None:
        return "", []
    ordered = sorted(parts)
    _materialize(
        lake,
        name,
        pa.table(
            {
                "tenant_id": pa.array([p[0] for p in ordered], pa.int32()),
                "local_date": pa.array([p[1] for p in ordered], pa.date32()),
            }
        ),
    )
    days = [p[1] for p in ordered] or [date(1970, 1, 1)]
    # The date range lets the Parquet reader skip whole files by their statistics.
    clause = (
        f" semi join {name} s on s.tenant_id = t.tenant_id and s.local_date = t.local_date"
        " where t.local_date between ? and ?"
    )
    return clause, [min(days), max(days)]


def _lake_totals(
    lake: duckdb.DuckDBPyConnection,
    view: str,
    spec: MeasureSpec,
    scope: tuple[str, list[object]],
    excluded: set[str],
) -> None:
    """``TOTALS`` of the lake, in-flight keys aside, into the temp table ``lake_totals``."""
    scale = " join scales c on c.code = t.currency" if spec.needs_scale else ""
    # Decoding every primary key (text) costs more than the aggregate itself: the anti-join
    # is left out when no key is in flight.
    anti = ""
    if excluded:
        _materialize(lake, "excluded", pa.table({"k": pa.array(sorted(excluded), pa.string())}))
        anti = f" anti join excluded x on x.k = t.{spec.table.primary_key}"
    lake.execute(
        f"create or replace temp table lake_totals as {_select(spec, 't.local_date')}"
        f" from {view} t{scale}{anti}{scope[0]} group by all",
        scope[1],
    )


#: Both sides per group, the snapshot's in-flight rows subtracted, limited to the compared
#: partitions (a Postgres window is exact, the in-flight keys' rows may lie anywhere).
_COMPARE = """
create or replace temp table compared as
with pg as (
    select tenant_id, local_date, currency, category,
        sum(n) as n, sum(amount) as amount, sum(fee) as fee, sum(net) as net, sum(delta) as delta
    from (
        select * from pg_totals
        union all
        select tenant_id, local_date, currency, category, -n, -amount, -fee, -net, -delta
        from pg_flying
    )
    group by all
), joined as (
    select tenant_id, local_date, currency, category,
        coalesce(p.n, 0) as pg_rows, coalesce(p.amount, 0) as pg_amount,
        coalesce(p.fee, 0) as pg_fee, coalesce(p.net, 0) as pg_net,
        coalesce(l.n, 0) as lake_rows, coalesce(l.amount, 0) as lake_amount,
        coalesce(l.fee, 0) as lake_fee, coalesce(l.net, 0) as lake_net,
        coalesce(p.delta, 0) as delta
    from pg p full outer join lake_totals l using (tenant_id, local_date, currency, category)
)
select * from joined j
"""
_MISMATCHES = """
select tenant_id, local_date, currency, category,
    pg_rows, pg_amount, pg_fee, pg_net, lake_rows, lake_amount, lake_fee, lake_net
from compared
where pg_rows <> lake_rows or pg_amount <> lake_amount or pg_fee <> lake_fee or pg_net <> lake_net
order by all
"""


def _compare_table(
    conn: psycopg.Connection[tuple[object, ...]],
    lake: duckdb.DuckDBPyConnection,
    layout: LakeLayout,
    lake_table: LakeTable,
    zones: Mapping[int, str],
    scales: Mapping[str, int],
    parts: set[tuple[int, date]] | None,
    postgres: Future[tuple[pa.Table, float]],
    window: ChangeWindow,
    outcome: _Outcome,
) -> None:
    """Compare one table; ``postgres`` is its snapshot totals, being computed meanwhile."""
    name = lake_table.name
    spec = SPECS[name]
    with _locked(layout, [name]):
        # Under the writer lock the table's files cannot change, and everything they hold
        # is landed: the change log read now names every key whose image may differ.
        window.refresh()
        excluded = window.keys(name)
        began = time.monotonic()
        view = create_lake_view(lake, layout, lake_table, name=f"lake_{name}", days=_days_of(parts))
        scope = _register_scope(lake, "scope", parts)
        _lake_totals(lake, view, spec, scope, excluded)
        outcome.lake_seconds += time.monotonic() - began
        totals, seconds = postgres.result()
        flying, flying_seconds = _postgres_totals(conn, spec, None, zones, scales, keys=excluded)
        outcome.pg_seconds += seconds + flying_seconds
        _materialize(lake, "pg_totals", totals)
        _materialize(lake, "pg_flying", flying)
        restrict = "" if parts is None else " semi join scope s using (tenant_id, local_date)"
        lake.execute(_COMPARE + restrict)
        rows, delta = _one(lake.execute("select sum(pg_rows), sum(delta) from compared"))
        mismatched = [
            Comparison(
                name, int(tenant), day, str(currency), str(category),
                Totals(*(int(v) for v in values[:4])), Totals(*(int(v) for v in values[4:])),
            )
            for tenant, day, currency, category, *values in lake.execute(_MISMATCHES).fetchall()
        ]  # fmt: skip
        outcome.groups.append(
            lake.execute(
                f"select ? as table_name, {', '.join(GROUPS.names[1:])} from compared",  # noqa: S608 - constant names
                [name],
            )
            .to_arrow_table()
            .cast(GROUPS)
        )
        outcome.checked.update(
            (name, tenant, day)
            for tenant, day in lake.execute(
                "select distinct tenant_id, local_date from compared"
            ).fetchall()
        )
        outcome.rows += int(rows or 0)
        if parts is not None:
            outcome.checked.update((name, tenant, day) for tenant, day in parts)
        if spec.needs_scale:
            outcome.delta[name] = float(delta or 0)
        if mismatched:
            _drill_down(conn, layout, lake_table, mismatched, excluded, outcome)


def _one(relation: duckdb.DuckDBPyConnection) -> tuple[Any, ...]:
    row = relation.fetchone()
    assert row is not None
    return tuple(row)


def _drill_down(
    conn: psycopg.Connection[tuple[object, ...]],
    layout: LakeLayout,
    lake_table: LakeTable,
    mismatched: list[Comparison],
    excluded: set[str],
    outcome: _Outcome,
) -> None:
    """Keys missing from, extra in and different in the lake, per mismatching partition."""
    pk = lake_table.spec.primary_key
    columns = lake_table.columns
    budget = DRILLDOWN_PARTITIONS - len(
        {(m.table, m.tenant_id, m.local_date) for m in outcome.mismatches}
    )
    details: dict[tuple[int, date, str], tuple[tuple[str, ...], ...]] = {}
    samples: dict[tuple[int, date, str], tuple[dict[str, object], ...]] = {}
    partitions = sorted({(c.tenant_id, c.local_date) for c in mismatched})
    for tenant, day in partitions[: max(0, budget)]:
        pg_rows = partition_rows_from_postgres(conn, lake_table, tenant, day).to_pylist()
        lake_rows = read_partitions(
            layout, lake_table, [PartitionKey(lake_table.name, tenant, day)]
        ).to_pylist()
        for currency in sorted(
            {c.currency for c in mismatched if (c.tenant_id, c.local_date) == (tenant, day)}
        ):
            pg = {
                str(r[pk]): r
                for r in pg_rows
                if r["currency"] == currency and str(r[pk]) not in excluded
            }
            lk: dict[str, list[dict[str, object]]] = {}
            for r in lake_rows:
                if r["currency"] == currency and str(r[pk]) not in excluded:
                    lk.setdefault(str(r[pk]), []).append(r)
            missing = sorted(set(pg) - set(lk))
            extra = sorted(k for k, rs in lk.items() if k not in pg or len(rs) > 1)
            different = sorted(
                k
                for k, rs in lk.items()
                if k in pg and len(rs) == 1 and any(rs[0][c] != pg[k][c] for c in columns)
            )
            found: list[dict[str, object]] = []
            for kind, chosen in (("missing", missing), ("extra", extra), ("different", different)):
                for k in chosen[:SAMPLES_PER_KIND]:
                    sample: dict[str, object] = {"kind": kind, "key": k}
                    if k in pg:
                        sample["postgres"] = _sample_row(pg[k], columns)
                    if k in lk:
                        sample["lake"] = [_sample_row(r, columns) for r in lk[k]]
                    if kind == "different":
                        sample["columns"] = [c for c in columns if lk[k][0][c] != pg[k][c]]
                    found.append(sample)
            details[(tenant, day, currency)] = (
                tuple(missing[:KEYS_PER_KIND]),
                tuple(extra[:KEYS_PER_KIND]),
                tuple(different[:KEYS_PER_KIND]),
            )
            samples[(tenant, day, currency)] = tuple(found)
    for c in mismatched:
        key = (c.tenant_id, c.local_date, c.currency)
        missing_keys, extra_keys, different_keys = details.get(key, ((), (), ()))
        outcome.mismatches.append(
            Mismatch(
                c.table, c.tenant_id, c.local_date, c.currency, c.category, c.postgres, c.lake,
                missing_keys, extra_keys, different_keys, samples.get(key, ()),
            )
        )  # fmt: skip


def _sample_row(row: Mapping[str, object], columns: list[str]) -> dict[str, object]:
    return {c: json_safe(row[c]) for c in columns}


# ------------------------------------------------------------------------------- identities

_SWEPT_DAYS = """
with p as (
    select p.id, p.balance_transaction
    from unnest(%(tenants)s::int4[], %(lows)s::timestamptz[], %(highs)s::timestamptz[])
        as w(tenant_id, lo, hi)
    cross join lateral (
        select r.id, r.balance_transaction from ledger.stripe_payouts r
        where r.tenant_id = w.tenant_id and r.created >= w.lo and r.created < w.hi offset 0
    ) p
), b as (
    select b.tenant_id, b.created from ledger.stripe_balance_transactions b
    where b.payout in (select id from p)
    union all
    select b.tenant_id, b.created from ledger.stripe_balance_transactions b
    where b.id in (select balance_transaction from p)
)
select distinct (b.created at time zone z.time_zone)::date
from b join ledger.tenants z on z.tenant_id = b.tenant_id
"""


def _swept_days(
    conn: psycopg.Connection[tuple[object, ...]], plan: _Plan, zones: Mapping[int, str]
) -> set[date] | None:
    """Days of the balance transactions that the compared payouts sweep or are paid by.

    A payout sweeps transactions of any earlier day, so without this the payout identity of
    every cycle would read every balance-transaction file. The days come from the snapshot
    (by the ``payout`` index): a transaction not in flight has the same day in the lake, and
    a payout named by one in flight is not judged. A lake transaction that names a payout
    the snapshot's does not is a difference of totals, which the comparison reports anyway.
    None (every day) for a full cycle.
    """
    if plan.partitions is None:
        return None
    parts = plan.partitions["stripe_payouts"]
    if not parts:
        return set()
    tenants, lows, highs = _windows(SPECS["stripe_payouts"], parts, zones)
    rows = conn.execute(_SWEPT_DAYS, {"tenants": tenants, "lows": lows, "highs": highs})
    return {day for (day,) in rows.fetchall() if isinstance(day, date)}


def _check_identities(
    lake: duckdb.DuckDBPyConnection,
    layout: LakeLayout,
    tables: Mapping[str, LakeTable],
    plan: _Plan,
    swept_days: set[date] | None,
    window: ChangeWindow,
    outcome: _Outcome,
) -> None:
    """Stripe's identities on the lake, over the compared partitions, in-flight keys aside.

    ``swept_days`` are the days of the balance transactions a compared payout sweeps or is
    paid by (``_swept_days``; None: every day).

    * balance transaction: ``net = amount - fee`` and ``fee = sum(fee_details[].amount)``;
    * completed payout (``reconciliation_status = 'completed'``, ``status = 'paid'``): its
      amount is the sum of ``net`` of the balance transactions whose ``payout`` names it, and
      its own balance transaction (``payout.balance_transaction``, type payout, ``payout``
      NULL) has ``amount = -payout.amount``. The generator builds payouts exactly this way
      (``lib/synth/generate.py``), and so does Stripe's automatic payout. A payout is judged
      once its own balance transaction is in the system of record: Stripe reports a payout
      (webhook) before the pull that brings its balance transactions and their links, and
      until then the identity is not yet checkable, not broken. (A transaction missing from
      the *lake* but present in Postgres is the totals comparison's to find.)
    """
    bt, po = "stripe_balance_transactions", "stripe_payouts"
    began = time.monotonic()
    with _locked(layout, [bt, po]):
        window.refresh()
        bt_keys = window.keys(bt)
        # A payout is judged only when neither it, its own transaction nor any transaction
        # that names it (before or after a change) is in flight.
        po_skip = window.keys(po) | window.referenced(bt, "payout")
        _materialize(lake, "bt_flying", pa.table({"k": pa.array(sorted(bt_keys), pa.string())}))
        _materialize(lake, "po_flying", pa.table({"k": pa.array(sorted(po_skip), pa.string())}))
        bt_parts = None if plan.partitions is None else plan.partitions[bt]
        po_parts = None if plan.partitions is None else plan.partitions[po]
        swept_view = create_lake_view(
            lake, layout, tables[bt], name="ident_swept_bt", days=swept_days
        )
        bt_view = create_lake_view(
            lake, layout, tables[bt], name="ident_bt", days=_days_of(bt_parts)
        )
        po_view = create_lake_view(
            lake, layout, tables[po], name="ident_po", days=_days_of(po_parts)
        )
        bt_scope = _register_scope(lake, "bt_scope", bt_parts)
        po_scope = _register_scope(lake, "po_scope", po_parts)
        bt_clause, bt_params = bt_scope
        po_clause, po_params = po_scope
        fee_sum = (
            "coalesce(list_sum(cast(json_extract(t.fee_details, '$[*].amount') as bigint[])), 0)"
        )
        rows = lake.execute(
            f"select * from (select t.id, t.tenant_id, t.amount, t.fee, t.net, {fee_sum} as fees"  # noqa: S608 - constant SQL
            f" from {bt_view} t anti join bt_flying x on x.k = t.id{bt_clause})"
            " where net <> amount - fee or fee <> fees order by id",
            bt_params,
        ).fetchall()
        for key, tenant, amount, fee, net, fees in rows:
            if net != amount - fee:
                outcome.violations.append(IdentityViolation(
                    "net = amount - fee", bt, str(key), int(tenant),
                    f"amount {amount} - fee {fee} = {amount - fee}, net is {net}",
                ))  # fmt: skip
            if fee != fees:
                outcome.violations.append(IdentityViolation(
                    "fee = sum(fee_details.amount)", bt, str(key), int(tenant),
                    f"fee {fee}, fee_details sum to {fees}",
                ))  # fmt: skip
        # create_lake_view unions in a registered Arrow table (the empty current schema), and
        # DuckDB 1.5 cannot push this query's bloom join filter into an Arrow scan.
        lake.execute("set disabled_optimizers = 'join_filter_pushdown'")
        payouts = lake.execute(
            f"""
            with p as (
                select t.id, t.tenant_id, t.amount, t.balance_transaction from {po_view} t
                anti join po_flying x on x.k = t.id{po_clause}
            ), judged as (
                select * from p where p.id in (
                    select t.id from {po_view} t
                    where t.reconciliation_status = 'completed' and t.status = 'paid')
                and (p.balance_transaction is null
                     or p.balance_transaction not in (select k from bt_flying))
            ), swept as (
                select b.payout, sum(b.net) as net from {swept_view} b
                where b.payout in (select id from judged) group by b.payout
            ), own as (
                select b.id, b.amount from {swept_view} b
                where b.id in (select balance_transaction from judged)
            )
            select j.id, j.tenant_id, j.amount, coalesce(s.net, 0), j.balance_transaction, o.amount
            from judged j left join swept s on s.payout = j.id
            join own o on o.id = j.balance_transaction
            where coalesce(s.net, 0) <> j.amount or o.amount <> -j.amount
            order by j.id
            """,  # noqa: S608 - view names are ours, values are registered tables or parameters
            po_params,
        ).fetchall()
        lake.execute("reset disabled_optimizers")
        for key, tenant, amount, swept, own_id, own_amount in payouts:
            if swept != amount:
                outcome.violations.append(IdentityViolation(
                    "payout = sum(balance transactions)", po, str(key), int(tenant),
                    f"payout amount {amount}, its balance transactions' net sums to {swept}",
                ))  # fmt: skip
            if own_amount != -amount:
                outcome.violations.append(IdentityViolation(
                    "payout transaction = -payout", po, str(key), int(tenant),
                    f"payout amount {amount}, its own transaction {own_id} has amount "
                    f"{own_amount}",
                ))  # fmt: skip
    outcome.lake_seconds += time.monotonic() - began
