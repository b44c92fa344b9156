"""``marts``: dbt marts over a real lake: full build, one-day incremental, Dagster overhead.

Seeds ``--rows`` over ``--tenants`` and ``--years``, builds the lake (snapshot + one CDC batch so
it is no longer "seeding"), then measures:

* the full ``dbt build`` of every mart with its data tests (no unit tests), wall and dbt's own
  elapsed time (run_results.json, i.e. without CLI start-up and parsing), then the lake audit
  the marts asset runs after publishing (the staging tests over every lake row);
* an incremental build of one day (the last full day), the same two ways, over lake views
  scoped to the day's files and the days its rows reach (``prepare_marts_database(window=)``),
  against the same build over views of the whole lake (the previous design) in the same run;
  then the build the marts asset runs (the staging/intermediate views kept, the project
  parsed without the vars: ``lib.marts.dbt_runner``) against that every-node build. Best of
  two runs each, as the machine is shared. Its cost should not depend on the lake's length:
  run at two sizes 10x apart with the same density, e.g. ``--rows 200000 --years 0.3`` and
  ``--rows 2000000 --years 3``;
* the same day materialized through Dagster (``ledger_marts``), a first run then steady ones:
  Dagster's overhead = each run's wall time - (the lake views' preparation, dbt's own elapsed
  time and the export, as that run logged them), with dbt started cold and forked warm;
* the "before" architecture: the daily P&L as a plain SQL view over Postgres. Three report
  reads (``REPORT_READS``: one tenant's 90-day P&L and monthly revenue, every tenant's 90-day
  net) from that view against the same reads from the marts (DuckDB), median of five each, in
  ms; and the whole daily P&L computed in Postgres against the full dbt build.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import psycopg

from bench.core import Context, Figure, workload
from ledger_assets.lib.cdc import CaptureConfig
from ledger_assets.lib.cdc import slot as slots
from ledger_assets.lib.lake.layout import LakeLayout
from ledger_assets.lib.lake.schema import LakeTable
from ledger_assets.lib.lake.sync import build_lake, lake_tables
from ledger_assets.lib.marts.contracts import results_dir
from ledger_assets.lib.marts.prepare import BuildWindow, PreparedDatabase, prepare_marts_database
from ledger_assets.lib.marts.project import (
    DBT_FORKSERVER_ENV,
    run_dbt_process,
    start_dbt_server,
    window_independent_views,
)
from ledger_assets.lib.synth.load import SeedSpec, seed_database

PROJECT = Path(__file__).resolve().parents[2] / "dbt_project"

PG_DAILY_PNL_VIEW = """
create view ledger.v_daily_pnl as
select bt.tenant_id, bt.currency, (bt.created at time zone t.time_zone)::date as local_date,
       sum(bt.amount) filter (where bt.reporting_category in ('charge', 'partial_capture_reversal'))
           as gross_charges,
       sum(bt.amount) filter (where bt.reporting_category in ('refund', 'refund_failure'))
           as refunds,
       sum(bt.amount) filter (where bt.reporting_category = 'dispute') as disputes,
       sum(bt.amount) filter (where bt.reporting_category = 'dispute_reversal')
           as dispute_reversals,
       -sum(bt.fee) filter (where bt.reporting_category not in ('payout', 'payout_reversal'))
           as fees,
       sum(bt.net) filter (where bt.reporting_category not in ('payout', 'payout_reversal'))
           as net
from ledger.stripe_balance_transactions bt
join ledger.tenants t on t.tenant_id = bt.tenant_id
group by 1, 2, 3
"""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_dbt(
    project: Path, state: Path, *args: str, target: Path | None = None
) -> tuple[float, float, float]:
    """Run dbt; returns (wall seconds, dbt's own elapsed seconds, CPU seconds of the process).

    The CPU seconds are the figure to compare on the shared machine, where wall times of
    identical runs differ 2x with the load. With ``target`` (its own target path, so its
    partial-parse state is its own), through the marts asset's ``lib.marts.dbt_runner`` (the
    project parsed without the vars) instead of dbt's CLI.
    """
    started, cpu = time.monotonic(), _children_cpu()
    result = run_dbt_process(args, project, state, runner=target is not None, target_path=target)
    wall, cpu = time.monotonic() - started, _children_cpu() - cpu
    if result.returncode != 0:
        raise RuntimeError(f"dbt {' '.join(args)} failed:\n{result.stdout[-4000:]}")
    results = (target or project / "target") / "run_results.json"
    if not results.exists():  # `dbt parse` writes none
        return wall, wall, cpu
    return wall, float(json.loads(results.read_text())["elapsed_time"]), cpu


def _window(day: date) -> str:
    return json.dumps({"start_date": day.isoformat(), "end_date": (day + timedelta(1)).isoformat()})


@dataclass(frozen=True)
class MartsBench:
    """A lake built from a seeded database, a copy of the dbt project, and its marts database
    prepared over the whole lake: where the marts and dashboard benches start."""

    layout: LakeLayout
    tables: dict[str, LakeTable]
    project: Path
    state: Path
    prepared: PreparedDatabase

    @property
    def database(self) -> Path:
        return self.state / "marts.duckdb"


def build_marts_bench(dsn: str, folder: Path, config: CaptureConfig) -> MartsBench:
    """Build the lake (its root holds ``config``'s change log), copy the dbt project into
    ``folder`` and prepare the marts database; dbt itself is not run."""
    layout = LakeLayout(config.changelog_dir.parent)
    build_lake(config, layout)
    with psycopg.connect(dsn) as conn:
        tables = lake_tables(conn)
    project = folder / "dbt_project"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("target", "logs"))
    state = folder / "state"
    prepared = prepare_marts_database(
        state / "marts.duckdb", layout, tables, dsn, results_dir(state)
    )
    return MartsBench(layout, tables, project, state, prepared)


@dataclass(frozen=True)
class SeededMarts:
    """A seeded database and the marts bench built from it (see :func:`seeded_marts`)."""

    dsn: str
    spec: SeedSpec
    lake_rows: int
    bench: MartsBench


@contextmanager
def seeded_marts(ctx: Context, label: str) -> Iterator[SeededMarts]:
    """Seed ``ctx.options``' rows into a fresh database and build the marts bench over its lake
    (in a temporary folder); the slot and the folder are dropped afterwards."""
    opts = ctx.options
    spec = SeedSpec.scale(opts.rows, tenants=opts.tenants, years=opts.years, seed=opts.seed)
    folder = Path(tempfile.mkdtemp(prefix=f"ledger-bench-{label}-"))
    with ctx.fresh_database(label) as dsn:
        report = seed_database(dsn, spec)
        name = str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])
        config = CaptureConfig(
            dsn=dsn, changelog_dir=folder / "lake" / "_changelog",
            slot_name=f"lake_{name}", publication=f"lake_{name}",
        )  # fmt: skip
        try:
            yield SeededMarts(dsn, spec, report.total_rows, build_marts_bench(dsn, folder, config))
        finally:
            with psycopg.connect(dsn, autocommit=True) as conn:
                slots.drop_slot(conn, config.slot_name)
            shutil.rmtree(folder, ignore_errors=True)


@workload("marts")
def marts(ctx: Context) -> list[Figure]:
    figures: list[Figure] = []
    with seeded_marts(ctx, "marts") as seeded:
        dsn, spec, bench = seeded.dsn, seeded.spec, seeded.bench
        layout, folder = bench.layout, bench.project.parent
        tables, project, marts_state = bench.tables, bench.project, bench.state
        database, prepared = bench.database, bench.prepared
        rows = seeded.lake_rows
        figures.append(Figure(f"lake rows ({spec.tenants} tenants)", rows, "rows"))
        figures.append(Figure("prepare views + refs", prepared.seconds, "s", None, False))
        run_dbt(project, marts_state, "parse")
        wall, own, cpu = run_dbt(project, marts_state, *full_build_args())
        figures.append(Figure("full build, all marts + tests (wall)", wall, "s", None, False))
        figures.append(Figure("full build, all marts + tests (dbt)", own, "s", None, False))
        figures.append(Figure("full build, all marts + tests (CPU)", cpu, "s", None, False))
        _, audit_own, _ = run_dbt(project, marts_state, *lake_audit_args())
        figures.append(Figure("lake audit after the full build (dbt)", audit_own, "s", None,
                              False))  # fmt: skip
        day = spec.end - timedelta(days=2)
        one_day = ("build", "--vars", _window(day), "--exclude-resource-type", "unit_test")
        # What the marts asset runs for the day: the views of the full build kept (but
        # those reading the window), through lib.marts.dbt_runner.
        asset_args = _asset_build_args(day)
        whole: list[tuple[float, float, float]] = []
        scoped: list[tuple[float, float, float]] = []
        asset: list[tuple[float, float, float]] = []
        for _ in range(2):
            prepare_marts_database(database, layout, tables, dsn, results_dir(marts_state))
            whole.append(run_dbt(project, marts_state, *one_day))
            windowed = prepare_marts_database(
                database, layout, tables, dsn, results_dir(marts_state),
                window=BuildWindow(day, day + timedelta(days=1)),
            )  # fmt: skip
            scoped.append(run_dbt(project, marts_state, *one_day))
            asset.append(run_dbt(project, marts_state, *asset_args, target=folder / "target"))
        figures.append(Figure("prepare, one-day scoped views", windowed.seconds, "s", None,
                              False))  # fmt: skip
        figures.append(Figure("one-day, every node (wall) vs whole-lake views",
                              min(w for w, _, _ in scoped), "s", min(w for w, _, _ in whole),
                              False))  # fmt: skip
        figures.append(Figure("one-day, every node (dbt) vs whole-lake views",
                              min(o for _, o, _ in scoped), "s", min(o for _, o, _ in whole),
                              False))  # fmt: skip
        inc_wall, inc_own = min(w for w, _, _ in asset), min(o for _, o, _ in asset)
        figures.append(Figure("one-day incremental (wall) vs every node", inc_wall, "s",
                              min(w for w, _, _ in scoped), False))  # fmt: skip
        figures.append(Figure("one-day incremental (dbt) vs every node", inc_own, "s",
                              min(o for _, o, _ in scoped), False))  # fmt: skip
        figures.append(Figure("one-day incremental (CPU) vs every node",
                              min(c for _, _, c in asset), "s",
                              min(c for _, _, c in scoped), False))  # fmt: skip
        figures += _dagster_overhead(dsn, layout, marts_state, day)
        figures += _before_and_after(dsn, database, spec.end, own)
    return figures


def full_build_args() -> list[str]:
    """The ``dbt build`` arguments of the marts asset's build of everything (the lake audit
    runs after it: :func:`lake_audit_args`)."""
    from ledger_assets.defs.dbt.assets import MartsConfig, dbt_build_args

    return dbt_build_args(None, MartsConfig())


def lake_audit_args() -> list[str]:
    """The ``dbt test`` arguments of the lake audit the marts asset runs after publishing."""
    from ledger_assets.defs.dbt.assets import lake_audit_args as audit_args

    return audit_args()


def _asset_build_args(day: date) -> list[str]:
    """The ``dbt build`` arguments of the marts asset's run over ``day``, views kept."""
    import dagster as dg

    from ledger_assets.defs.dbt.assets import MANIFEST_PATH, MartsConfig, dbt_build_args

    start = datetime.combine(day, datetime.min.time())
    kept = window_independent_views(json.loads(MANIFEST_PATH.read_text()))
    return dbt_build_args(dg.TimeWindow(start, start + timedelta(days=1)), MartsConfig(), kept)


#: What the marts asset logs of its own work, in seconds: preparing the lake views, exporting.
_ASSET_WORK_LOGS = (
    re.compile(r"marts database ready in ([0-9.]+) s"),
    re.compile(r"published marts snapshot \S+ in ([0-9.]+) s"),
)


@dataclass(frozen=True)
class DagsterRun:
    """One materialization of the marts asset: its wall time and what Dagster adds to it."""

    wall: float
    #: wall - (the asset's own work: preparing the views, dbt's elapsed time, the export):
    #: starting and finishing the run and step, dbt's process start and parse, event streaming.
    overhead: float


def _dagster_overhead(dsn: str, layout: LakeLayout, state: Path, day: date) -> list[Figure]:
    """The day materialized through Dagster, after a first run (which re-creates the views a
    hand-run full build left unrecorded, and leaves dbt's partial-parse state): the steady
    runs are those of the schedule and the late-arrivals sensor. Steady runs alternate between
    dbt started cold (a new process imports dbt) and dbt forked from a warm dbt server
    (``LEDGER_DBT_FORKSERVER``), best of two each. Each run's overhead is taken from that run
    alone: its wall time minus the work the asset logs and dbt's own elapsed time."""
    import dagster as dg

    from ledger_assets.defs.dbt.assets import ledger_marts
    from ledger_assets.defs.dbt.resources import MartsResource, marts_run_resources
    from ledger_assets.defs.resources import LakeResource

    os.environ["LEDGER_STATE_DIR"] = str(state)
    resources = marts_run_resources(dsn, LakeResource(root=str(layout.root)), state)
    dbt_results = MartsResource(state_dir=str(state)).dbt_target / "run_results.json"

    def materialize() -> DagsterRun:
        instance = dg.DagsterInstance.ephemeral()
        started = time.monotonic()
        result = dg.materialize(
            [ledger_marts], partition_key=day.isoformat(), resources=resources, instance=instance
        )
        wall = time.monotonic() - started
        assert result.success
        messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
        logged = [
            float(found.group(1))
            for pattern in _ASSET_WORK_LOGS
            for found in map(pattern.search, messages)
            if found
        ]
        assert len(logged) == len(_ASSET_WORK_LOGS), "the asset's log lines changed"
        dbt_own = float(json.loads(dbt_results.read_text())["elapsed_time"])
        return DagsterRun(wall, wall - sum(logged) - dbt_own)

    first = materialize()
    server = start_dbt_server()
    cold: list[DagsterRun] = []
    warm: list[DagsterRun] = []
    try:
        for _ in range(2):
            os.environ.pop(DBT_FORKSERVER_ENV, None)
            cold.append(materialize())
            os.environ[DBT_FORKSERVER_ENV] = server.socket_path
            warm.append(materialize())
    finally:
        os.environ.pop(DBT_FORKSERVER_ENV, None)
        server.stop()
    cold_wall, warm_wall = min(r.wall for r in cold), min(r.wall for r in warm)
    warm_overhead, cold_overhead = min(r.overhead for r in warm), min(r.overhead for r in cold)
    steady = "one-day via Dagster (wall), steady vs first"
    forked = "one-day via Dagster, warm dbt server vs cold dbt"
    overhead = "one-day via Dagster: overhead, warm vs cold dbt"
    return [
        Figure(steady, cold_wall, "s", first.wall, False),
        Figure(forked, warm_wall, "s", cold_wall, False),
        Figure(overhead, warm_overhead, "s", cold_overhead, False),
    ]


#: Report reads as the dashboard and analysts issue them, each against the "before" view over
#: Postgres and against the mart: (name, Postgres SQL, mart SQL); parameters: tenant, since.
REPORT_READS = (
    (
        "90-day daily P&L, 1 tenant",
        "select * from ledger.v_daily_pnl where tenant_id = %s and local_date >= %s",
        "select * from marts.marts.daily_pnl where tenant_id = ? and local_date >= ?",
    ),
    (
        "monthly revenue since then, 1 tenant",
        "select currency, date_trunc('month', local_date) as month_start, "
        "sum(coalesce(gross_charges, 0) + coalesce(refunds, 0) + coalesce(disputes, 0) "
        "+ coalesce(dispute_reversals, 0)) as revenue from ledger.v_daily_pnl "
        "where tenant_id = %s and local_date >= %s group by 1, 2",
        "select currency, month_start, revenue from marts.marts.monthly_revenue "
        "where tenant_id = ? and month_start >= date_trunc('month', ?::date)",
    ),
    (
        "every tenant's net, 90 days",
        "select tenant_id, currency, sum(net) from ledger.v_daily_pnl "
        "where tenant_id >= %s and local_date >= %s group by 1, 2",
        "select tenant_id, currency, sum(net) from marts.marts.daily_pnl "
        "where tenant_id >= ? and local_date >= ? group by 1, 2",
    ),
)
#: Each read is timed this many times; the median is reported (the machine is shared).
READ_REPEATS = 5


def _median_ms(read: Callable[[], object]) -> float:
    times = []
    for _ in range(READ_REPEATS):
        started = time.perf_counter()
        read()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _fetch_postgres(conn: psycopg.Connection[Any], query: str, params: tuple[object, ...]) -> None:
    conn.execute(query, params).fetchall()


def _fetch_duckdb(con: duckdb.DuckDBPyConnection, query: str, params: list[object]) -> None:
    con.execute(query, params).fetchall()


def _before_and_after(dsn: str, database: Path, end: date, dbt_full: float) -> list[Figure]:
    """The "before" architecture side by side: each report read from a plain SQL view over
    Postgres and from the mart, and the whole daily P&L computed by Postgres against the full
    dbt build (all marts and their tests, so not the same work)."""
    since = end - timedelta(days=90)
    figures = []
    con = duckdb.connect(str(database), read_only=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(PG_DAILY_PNL_VIEW)
        for name, pg_sql, mart_sql in REPORT_READS:
            pg_ms = _median_ms(partial(_fetch_postgres, conn, pg_sql, (1, since)))
            mart_ms = _median_ms(partial(_fetch_duckdb, con, mart_sql, [1, since]))
            figures.append(Figure(f"{name}: mart vs PG view", mart_ms, "ms", pg_ms, False))
        started = time.monotonic()
        conn.execute("select count(*), sum(net) from ledger.v_daily_pnl").fetchall()
        pg_all = time.monotonic() - started
    con.close()
    figures.append(Figure("all daily P&L: dbt full build vs PG view", dbt_full, "s", pg_all, False))
    return figures
