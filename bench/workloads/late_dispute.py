"""``late_dispute``: a dispute on a months-old charge, from its commit to updated marts.

At two lake sizes 10x apart (``--rows`` and ``--rows / 10``), each seeded and built into a lake
with a full marts build, measures the targeted path from the dispute committed in Postgres
(through the ingestion writer, which also marks the charge disputed):

* capture (the slot into the change log), the lake apply as a Dagster run
  (``lake_apply_job.execute_in_process``: rewrites only the touched partitions and records the
  materializations), the late-arrivals sensor tick, and the requested old mart day built as a
  Dagster run (``marts_job`` for the day the sensor requests) — so Dagster's run overhead
  is included; it is also measured alone (a trivial job through ``execute_in_process`` on an
  ephemeral instance);
* against the naive path: re-snapshot the three touched tables into a fresh lake, prepare the
  marts database over the whole lake and rebuild every mart (``dbt build``, all days).

The marts start as the schedule's first run leaves them: a full build through Dagster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import psycopg

from bench.core import Context, Figure, workload
from bench.workloads.marts import PROJECT, _dbt
from ledger_assets.defs.dbt.assets import ledger_marts
from ledger_assets.defs.dbt.resources import marts_run_resources
from ledger_assets.defs.dbt.schedules import CURRENT_TAG, marts_job
from ledger_assets.defs.disputes.sensors import late_arrivals_sensor
from ledger_assets.defs.lake.jobs import lake_apply_job
from ledger_assets.defs.resources import LakeResource
from ledger_assets.lib.cdc import ChangeCapture
from ledger_assets.lib.cdc import slot as slots
from ledger_assets.lib.ingest.stripe_records import validate_objects
from ledger_assets.lib.ingest.stripe_writer import write_stripe_rows
from ledger_assets.lib.lake.layout import LakeLayout
from ledger_assets.lib.lake.snapshot import snapshot_table
from ledger_assets.lib.lake.sync import build_lake, lake_tables, tenant_zones
from ledger_assets.lib.lake.versions import stored_versions
from ledger_assets.lib.marts.contracts import results_dir
from ledger_assets.lib.marts.prepare import prepare_marts_database
from ledger_assets.lib.synth.load import SeedSpec, seed_database

TOUCHED = ("stripe_disputes", "stripe_balance_transactions", "stripe_charges")


def _open_dispute(dsn: str, now: datetime) -> str:
    """Commit a dispute (with its withdrawal) on a succeeded charge 100-150 days old."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "select id, tenant_id, amount, currency from ledger.stripe_charges "
            "where status = 'succeeded' and not disputed and created between %s and %s "
            "order by id limit 1",
            (now - timedelta(days=150), now - timedelta(days=100)),
        ).fetchone()
        assert row is not None, "no charge 100-150 days old to dispute"
        charge, tenant, amount, currency = str(row[0]), int(str(row[1])), int(str(row[2])), row[3]
        created = int(now.timestamp())
        dispute_id = f"dp_bench_{charge}"
        withdrawal = {
            "id": f"txn_{dispute_id}", "object": "balance_transaction", "amount": -amount,
            "fee": 1500, "net": -amount - 1500, "currency": currency, "exchange_rate": None,
            "fee_details": [], "type": "adjustment", "reporting_category": "dispute",
            "source": dispute_id, "status": "pending", "available_on": created + 86_400,
            "created": created,
        }  # fmt: skip
        dispute = {
            "id": dispute_id, "object": "dispute", "amount": amount, "currency": currency,
            "charge": charge, "reason": "fraudulent", "status": "needs_response",
            "balance_transactions": [withdrawal], "created": created,
        }  # fmt: skip
        rows = validate_objects([dispute], tenant, now)
        write_stripe_rows(conn, rows, tenant, {dispute_id: dispute})
    return dispute_id


def _one_size(ctx: Context, rows: int, folder: Path) -> dict[str, float]:
    opts = ctx.options
    # History up to today, so the dispute opens now (a hot day) on a months-old charge.
    now = datetime.now(UTC)
    days = round(365.25 * opts.years)
    spec = SeedSpec(
        seed=opts.seed, tenants=opts.tenants, start=now.date() - timedelta(days=days), days=days,
        target_rows=rows,
    )  # fmt: skip
    figures: dict[str, float] = {}
    with ctx.fresh_database(f"late_{rows}") as dsn:
        seed_database(dsn, spec)
        name = str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])
        lake = LakeResource(root=str(folder / "lake"), slot_name=name, publication=name)
        state = folder / "state"
        os.environ["LEDGER_STATE_DIR"] = str(state)
        resources = marts_run_resources(dsn, lake, state)
        try:
            build_lake(lake.capture_config(dsn), lake.layout)
            with psycopg.connect(dsn) as conn:
                tables = lake_tables(conn)
            instance = dg.DagsterInstance.ephemeral()
            # The runs go through ``marts_job``, as the schedule and the sensor launch them (the
            # sensor waits for that job's first successful full build).
            job = dg.Definitions(
                assets=[ledger_marts], jobs=[marts_job], resources=resources
            ).resolve_job_def(marts_job.name)
            # The marts as the schedule's first run leaves them: a full build through Dagster
            # (which also records the views, so one-day runs keep them).
            assert job.execute_in_process(
                partition_key=now.date().isoformat(), instance=instance,
                run_config=dg.RunConfig({ledger_marts.op.name: {"config": {"full_refresh": True}}}),
                tags={CURRENT_TAG: "full_refresh"},
            ).success  # fmt: skip

            started = time.monotonic()
            dispute_id = _open_dispute(dsn, now)
            committed = time.monotonic()
            with ChangeCapture(lake.capture_config(dsn)) as capture:
                capture.start()
                capture.run(max_seconds=30)
            captured = time.monotonic()
            assert lake_apply_job.execute_in_process(resources=resources, instance=instance).success
            applied = time.monotonic()
            tick = late_arrivals_sensor(dg.build_sensor_context(instance=instance))
            assert isinstance(tick, dg.SensorResult)
            requests = tick.run_requests or []
            assert [r.tags["ledger/dispute"] for r in requests] == [dispute_id]
            for request in requests:
                # A single day comes as a partition key, a range of days as the range tags.
                result = job.execute_in_process(
                    partition_key=request.partition_key, instance=instance, tags=request.tags
                )
                assert result.success
            done = time.monotonic()
            figures["end to end"] = done - committed
            figures["commit"] = committed - started
            figures["capture"] = captured - committed
            figures["apply run"] = applied - captured
            figures["sensor + marts run"] = done - applied
            figures["partitions rewritten"] = sum(
                len(stored_versions(lake.layout, t)) for t in TOUCHED
            )
            version_bytes = [
                v.path.stat().st_size for t in TOUCHED for v in stored_versions(lake.layout, t)
            ]
            figures["bytes per version"] = sum(version_bytes) / max(len(version_bytes), 1)

            # Naive: re-snapshot the touched tables, then rebuild every mart.
            started = time.monotonic()
            fresh = LakeLayout(folder / "naive_lake")
            with psycopg.connect(dsn) as conn:
                zones = tenant_zones(conn)
            for table in TOUCHED:
                snapshot_table(dsn, fresh, tables[table], zones)
            prepare_marts_database(
                state / "marts.duckdb", lake.layout, tables, dsn, results_dir(state)
            )
            _dbt(PROJECT, state, "build", "--exclude-resource-type", "unit_test")
            figures["naive"] = time.monotonic() - started
        finally:
            with psycopg.connect(dsn, autocommit=True) as conn:
                slots.drop_slot(conn, name)
    return figures


def _dagster_run_overhead() -> float:
    """Wall time of a do-nothing job run in process on an ephemeral instance (median of 5)."""

    @dg.op
    def nothing() -> None:
        return None

    @dg.job
    def trivial() -> None:
        nothing()

    instance = dg.DagsterInstance.ephemeral()
    trivial.execute_in_process(instance=instance)  # warm-up: imports, instance set-up
    times = []
    for _ in range(5):
        started = time.monotonic()
        trivial.execute_in_process(instance=instance)
        times.append(time.monotonic() - started)
    return sorted(times)[2]


def _run_worker_start() -> float:
    """Wall time for a new process to load the code location (median of 3).

    ``execute_in_process`` runs in this already-loaded process. A run launched by a sensor in a
    deployment (the default run launcher) starts a worker process that imports the code
    location first; that is the part of Dagster's overhead the in-process figures leave out.
    """
    times = []
    for _ in range(3):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", "import ledger_assets.definitions"], check=True)
        times.append(time.monotonic() - started)
    return sorted(times)[1]


@workload("late_dispute")
def late_dispute(ctx: Context) -> list[Figure]:
    figures: list[Figure] = []
    by_size = {}
    for rows in (ctx.options.rows // 10, ctx.options.rows):
        folder = Path(tempfile.mkdtemp(prefix="ledger-bench-late-"))
        try:
            by_size[rows] = _one_size(ctx, rows, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    for rows, f in by_size.items():
        figures += [
            Figure(f"{rows} rows: dispute -> lake + marts vs naive", f["end to end"], "s",
                   f["naive"], False),
            Figure(f"{rows} rows: capture", f["capture"], "s", None, False),
            Figure(f"{rows} rows: apply run (Dagster)", f["apply run"], "s", None, False),
            Figure(f"{rows} rows: sensor + 1-day marts run", f["sensor + marts run"], "s", None,
                   False),
            Figure(f"{rows} rows: partitions rewritten", f["partitions rewritten"], "files"),
            Figure(f"{rows} rows: bytes per kept version", f["bytes per version"], "B"),
        ]  # fmt: skip
    small, large = (by_size[r]["end to end"] for r in by_size)
    large_rows = max(by_size)
    figures.append(Figure("10x lake: end-to-end time ratio (<= 1.2)", large / small, "x"))
    overhead_ms = _dagster_run_overhead() * 1e3
    figures.append(Figure("Dagster run overhead, in process (trivial job)", overhead_ms, "ms"))
    worker = _run_worker_start()
    figures.append(Figure("launched run: worker process loads the code location", worker, "s"))
    # The targeted path is two runs (the apply run, then the marts run); launched, each pays
    # the worker start on top of the in-process figures.
    figures.append(Figure(
        f"{large_rows} rows: end to end with 2 launched runs (estimate)", large + 2 * worker, "s"
    ))  # fmt: skip
    return figures
