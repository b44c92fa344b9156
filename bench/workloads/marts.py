"""``marts``: dbt marts over a real lake: full build, one-day incremental, Dagster overhead.

Seeds ``--rows`` over ``--tenants`` and ``--years``, builds the lake (snapshot + one CDC batch so
it is no longer "seeding"), then measures:

* the full ``dbt build`` of every mart with its data tests (no unit tests), wall and dbt's own
  elapsed time (run_results.json, i.e. without CLI start-up and parsing);
* an incremental build of one day (the last full day), the same two ways, over lake views
  scoped to the day's files and the days its rows reach (``prepare_marts_database(window=)``),
  against the same build over views of the whole lake (the previous design) in the same run;
  best of two runs each, as the machine is shared. Its cost should not depend on the lake's
  length: run at two sizes 10x apart with the same density, e.g. ``--rows 200000 --years 0.3``
  and ``--rows 2000000 --years 3``;
* the same day materialized through Dagster (``ledger_marts`` with DbtCliResource): Dagster's
  overhead = its wall time - (the scoped prepare + dbt's wall time) for the same day;
* the "before" architecture: the daily P&L as a plain SQL view over Postgres, read for one
  tenant's last 90 days, against the same read from the mart (DuckDB), and the whole daily P&L
  computed in Postgres against the full dbt build.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import psycopg

from bench.core import Context, Figure, workload
from ledger_assets.lib.cdc import CaptureConfig
from ledger_assets.lib.cdc import slot as slots
from ledger_assets.lib.lake.layout import LakeLayout
from ledger_assets.lib.lake.sync import build_lake, lake_tables
from ledger_assets.lib.marts.contracts import results_dir
from ledger_assets.lib.marts.prepare import BuildWindow, prepare_marts_database
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


def _dbt(project: Path, state: Path, *args: str) -> tuple[float, float]:
    """Run dbt; returns (wall seconds, dbt's own elapsed seconds)."""
    dbt = Path(sys.executable).with_name("dbt")
    started = time.monotonic()
    result = subprocess.run(
        [str(dbt), *args, "--project-dir", str(project), "--profiles-dir", str(project)],
        env={**os.environ, "LEDGER_STATE_DIR": str(state),
             "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"dbt {' '.join(args)} failed:\n{result.stdout[-4000:]}")
    results = project / "target" / "run_results.json"
    if not results.exists():  # `dbt parse` writes none
        return wall, wall
    return wall, float(json.loads(results.read_text())["elapsed_time"])


def _window(day: date) -> str:
    return json.dumps({"start_date": day.isoformat(), "end_date": (day + timedelta(1)).isoformat()})


@workload("marts")
def marts(ctx: Context) -> list[Figure]:
    opts = ctx.options
    spec = SeedSpec.scale(opts.rows, tenants=opts.tenants, years=opts.years, seed=opts.seed)
    folder = Path(tempfile.mkdtemp(prefix="ledger-bench-marts-"))
    figures: list[Figure] = []
    with ctx.fresh_database("marts") as dsn:
        report = seed_database(dsn, spec)
        layout = LakeLayout(folder / "lake")
        name = str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])
        config = CaptureConfig(
            dsn=dsn, changelog_dir=layout.root / "_changelog",
            slot_name=f"lake_{name}", publication=f"lake_{name}",
        )  # fmt: skip
        try:
            build_lake(config, layout)
            with psycopg.connect(dsn) as conn:
                tables = lake_tables(conn)
            project = folder / "dbt_project"
            shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("target", "logs"))
            marts_state = folder / "state"
            database = marts_state / "marts.duckdb"
            prepared = prepare_marts_database(
                database, layout, tables, dsn, results_dir(marts_state)
            )
            rows = report.total_rows
            figures.append(Figure(f"lake rows ({spec.tenants} tenants)", rows, "rows"))
            figures.append(Figure("prepare views + refs", prepared.seconds, "s", None, False))
            _dbt(project, marts_state, "parse")
            wall, own = _dbt(project, marts_state, "build", "--exclude-resource-type", "unit_test")
            figures.append(Figure("full build, all marts + tests (wall)", wall, "s", None, False))
            figures.append(Figure("full build, all marts + tests (dbt)", own, "s", None, False))
            day = spec.end - timedelta(days=2)
            one_day = ("build", "--vars", _window(day), "--exclude-resource-type", "unit_test")
            whole: list[tuple[float, float]] = []
            scoped: list[tuple[float, float]] = []
            for _ in range(2):
                prepare_marts_database(database, layout, tables, dsn, results_dir(marts_state))
                whole.append(_dbt(project, marts_state, *one_day))
                windowed = prepare_marts_database(
                    database, layout, tables, dsn, results_dir(marts_state),
                    window=BuildWindow(day, day + timedelta(days=1)),
                )  # fmt: skip
                scoped.append(_dbt(project, marts_state, *one_day))
            inc_wall, inc_own = min(w for w, _ in scoped), min(o for _, o in scoped)
            figures.append(Figure("prepare, one-day scoped views", windowed.seconds, "s", None,
                                  False))  # fmt: skip
            figures.append(Figure("one-day incremental (wall) vs whole-lake views", inc_wall, "s",
                                  min(w for w, _ in whole), False))  # fmt: skip
            figures.append(Figure("one-day incremental (dbt) vs whole-lake views", inc_own, "s",
                                  min(o for _, o in whole), False))  # fmt: skip
            figures.append(
                _dagster_overhead(dsn, layout, marts_state, day, inc_wall + windowed.seconds)
            )
            figures += _before_and_after(dsn, database, spec.end, own)
        finally:
            with psycopg.connect(dsn, autocommit=True) as conn:
                slots.drop_slot(conn, config.slot_name)
            shutil.rmtree(folder, ignore_errors=True)
    return figures


def _dagster_overhead(
    dsn: str, layout: LakeLayout, state: Path, day: date, dbt_wall: float
) -> Figure:
    import dagster as dg

    from ledger_assets.defs.dbt.assets import ledger_marts
    from ledger_assets.defs.dbt.resources import marts_run_resources
    from ledger_assets.defs.resources import LakeResource

    os.environ["LEDGER_STATE_DIR"] = str(state)
    started = time.monotonic()
    result = dg.materialize(
        [ledger_marts],
        partition_key=day.isoformat(),
        resources=marts_run_resources(dsn, LakeResource(root=str(layout.root)), state),
    )
    wall = time.monotonic() - started
    assert result.success
    return Figure("one-day via Dagster: overhead over dbt", wall - dbt_wall, "s", None, False)


def _before_and_after(dsn: str, database: Path, end: date, dbt_full: float) -> list[Figure]:
    since = end - timedelta(days=90)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(PG_DAILY_PNL_VIEW)
        started = time.monotonic()
        conn.execute(
            "select * from ledger.v_daily_pnl where tenant_id = %s and local_date >= %s", (1, since)
        ).fetchall()
        pg_read = time.monotonic() - started
        started = time.monotonic()
        conn.execute("select count(*), sum(net) from ledger.v_daily_pnl").fetchall()
        pg_all = time.monotonic() - started
    con = duckdb.connect(str(database), read_only=True)
    started = time.monotonic()
    con.execute(
        "select * from marts.marts.daily_pnl where tenant_id = ? and local_date >= ?", [1, since]
    ).fetchall()
    mart_read = time.monotonic() - started
    con.close()
    return [
        Figure("90-day P&L, 1 tenant: mart vs PG view", mart_read, "s", pg_read, False),
        Figure("all daily P&L: dbt full build vs PG view", dbt_full, "s", pg_all, False),
    ]
