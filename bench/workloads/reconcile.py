"""``reconcile``: a full three-year reconciliation and one incremental cycle, vs. a naive diff.

Seeds ``--rows`` rows over ``--tenants`` tenants and ``--years`` years, builds the lake through
CDC, then measures:

* **full**: every partition of every mirrored table, Postgres side and lake side separately;
* **incremental**: one 15-minute cycle after a trickle of a few hundred changes (captured and
  applied first, as the CDC sensor would), with the default rolling sweep (1/96 of the days);
* **baseline**: the naive check, pulling every row of every table from Postgres (DuckDB's
  postgres scanner) and diffing it against the lake with ``EXCEPT ALL`` in both directions.

The 200M-row figures are linear extrapolations of the measured rows/s, not measurements; the
groups compared are reported too (a share of the cost follows them, and they saturate at
tenants x days x currencies x categories).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import psycopg

from bench.core import Context, Figure, workload
from ledger_assets.lib.cdc import CaptureConfig, ChangeCapture
from ledger_assets.lib.cdc import slot as slots
from ledger_assets.lib.lake.layout import LakeLayout
from ledger_assets.lib.lake.reader import create_lake_view
from ledger_assets.lib.lake.snapshot import postgres_scanner
from ledger_assets.lib.lake.sync import apply_landed, build_lake, lake_tables
from ledger_assets.lib.reconcile import ReconcileScope, reconcile
from ledger_assets.lib.synth.load import SeedSpec, seed_database

TARGET_ROWS = 200_000_000
TRICKLE = 300


def _trickle(dsn: str, changes: int) -> None:
    """Updates of recent charges and refunds of their amounts, in small transactions."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = conn.execute(
            "select id from ledger.stripe_charges order by created desc limit %s", (changes,)
        ).fetchall()
        for (charge,) in ids:
            conn.execute(
                "update ledger.stripe_charges set amount_refunded = least(amount, 100)"
                " where id = %s",
                (charge,),
            )


def _naive_diff(dsn: str, layout: LakeLayout) -> int:
    """Every row of both sides, diffed in DuckDB; returns the differing row count."""
    with psycopg.connect(dsn) as conn:
        tables = lake_tables(conn)
    con = postgres_scanner(dsn)
    differing = 0
    try:
        for name, lake_table in tables.items():
            view = create_lake_view(con, layout, lake_table, name=f"lake_{name}")
            columns = ", ".join(
                f"cast({c} as varchar)" if str(lake_table.source.field(c).type) == "string" else c
                for c in lake_table.columns
            )
            for left, right in ((view, f"pg.ledger.{name}"), (f"pg.ledger.{name}", view)):
                row = con.execute(
                    f"select count(*) from (select {columns} from {left}"  # noqa: S608 - catalog names
                    f" except all select {columns} from {right})"
                ).fetchone()
                differing += int(row[0]) if row else 0
    finally:
        con.close()
    return differing


@workload("reconcile")
def reconcile_bench(ctx: Context) -> list[Figure]:
    options = ctx.options
    days = int(options.years * 365)
    spec = SeedSpec(
        seed=options.seed, tenants=options.tenants, days=days, target_rows=options.rows,
        start=date.today() - timedelta(days=days),
    )  # fmt: skip
    folder = Path(tempfile.mkdtemp(prefix="bench-reconcile-"))
    folder.chmod(0o755)
    layout = LakeLayout(folder / "lake")
    try:
        with ctx.fresh_database("reconcile") as dsn:
            seeded = seed_database(dsn, spec)
            rows = sum(t.rows for t in seeded.tables.values())
            config = CaptureConfig(
                dsn=dsn, changelog_dir=layout.root / "_changelog", slot_name="bench_reconcile",
                publication="bench_reconcile",
            )  # fmt: skip
            try:
                build_lake(config, layout)
                state_dir = folder / "state"
                began = time.perf_counter()
                full = reconcile(config, layout, state_dir, ReconcileScope("full"))
                full_s = time.perf_counter() - began
                assert full.status == "pass", full.to_metadata()
                reconcile(config, layout, state_dir, ReconcileScope("incremental"))
                _trickle(dsn, TRICKLE)
                with ChangeCapture(config) as capture:
                    capture.start()
                    capture.run()
                apply_landed(dsn, layout, config.changelog_dir, max_batches=1000)
                began = time.perf_counter()
                cycle = reconcile(config, layout, state_dir, ReconcileScope("incremental"))
                cycle_s = time.perf_counter() - began
                assert cycle.status == "pass", cycle.to_metadata()
                began = time.perf_counter()
                differing = _naive_diff(dsn, layout)
                naive_s = time.perf_counter() - began
                assert differing == 0
            finally:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    slots.drop_slot(conn, "bench_reconcile")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    scale = TARGET_ROWS / rows
    return [
        Figure("rows in Postgres (and the lake)", rows, "rows"),
        Figure("full: total vs naive EXCEPT ALL diff", full_s, "s", naive_s,
               higher_is_better=False),
        Figure("full: Postgres side", full.postgres_seconds, "s", higher_is_better=False),
        Figure("full: lake side", full.lake_seconds, "s", higher_is_better=False),
        Figure("full: rows/s vs naive diff", rows / full_s, "rows/s", rows / naive_s),
        # Groups stop growing once every (tenant, day, currency, category) holds rows, so the
        # per-row extrapolation below is an upper bound for the per-group share of the work.
        Figure("full: groups compared", full.groups.num_rows, "groups"),
        Figure("full: partitions compared", full.partitions_checked, "parts"),
        Figure("full at 200M, extrapolated (target 60)", full_s * scale, "s",
               naive_s * scale, higher_is_better=False),
        Figure("full at 200M extrap.: Postgres side", full.postgres_seconds * scale, "s",
               higher_is_better=False),
        Figure("full at 200M extrap.: lake side", full.lake_seconds * scale, "s",
               higher_is_better=False),
        Figure(f"incremental cycle after {TRICKLE} changes", cycle_s, "s",
               higher_is_better=False),
        Figure("incremental: partitions checked", cycle.partitions_checked, "parts"),
        Figure("incremental: Postgres rows read", cycle.rows_compared, "rows"),
        Figure("incremental: Postgres / lake side", cycle.postgres_seconds, "s",
               cycle.lake_seconds, higher_is_better=False),
    ]  # fmt: skip
