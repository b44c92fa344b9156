"""``late_dispute``: a dispute on a months-old charge, from its commit to updated marts.

At two lake sizes 10x apart (``--rows`` and ``--rows / 10``), each seeded and built into a lake
with a full marts build, measures the targeted path from the dispute committed in Postgres
(through the ingestion writer, which also marks the charge disputed):

* capture (the slot into the change log, as the CDC sensor's tick does), the lake apply as a
  Dagster run (``lake_apply_job``: rewrites only the touched partitions and records the
  materializations), the late-arrivals sensor tick, and the requested old mart day built as a
  Dagster run (``marts_job`` for the day the sensor requests), all on one persistent instance;
  three times, for three disputes: with both runs executed in this process
  (``execute_in_process``); then with each run in a new process that loads the code location
  first, as Dagster's default launcher starts a run's worker (``dagster job execute``); then
  launched by this project's ``ForkServerRunLauncher`` (``dagster.yaml``), each worker forked
  from a process that has loaded the code location, dbt forked from one that has imported dbt.
  The last two include Dagster's whole run overhead. The in-process overhead of a run is also
  measured alone (a trivial job);
* against the naive path: re-snapshot the three touched tables into a fresh lake, prepare the
  marts database over the whole lake and rebuild every mart (``dbt build``, all days).

The marts start as the schedule's first run leaves them: a full build through Dagster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import psycopg

from bench.core import Context, Figure, local_instance, workload
from bench.workloads.marts import PROJECT, run_dbt
from ledger_assets.defs.dbt.assets import ledger_marts
from ledger_assets.defs.dbt.resources import marts_run_resources
from ledger_assets.defs.dbt.schedules import CURRENT_TAG, marts_job
from ledger_assets.defs.disputes.sensors import late_arrivals_sensor
from ledger_assets.defs.lake.jobs import lake_apply_job
from ledger_assets.defs.resources import LakeResource, SensorWaitResource
from ledger_assets.defs.runs import PARTITION_TAG
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


def open_dispute(dsn: str, now: datetime) -> str:
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


RunExecutor = Callable[[str, Mapping[str, str]], None]


def _dispute_to_marts(
    dsn: str, now: datetime, lake: LakeResource, instance: dg.DagsterInstance,
    execute: RunExecutor, sensor_cursor: str | None,
) -> tuple[dict[str, float], str | None]:  # fmt: skip
    """One dispute from its commit to the marts: capture (what the CDC sensor's tick does), the
    apply run, the late-arrivals sensor's tick and the marts run it requests. Returns the
    timings and the sensor's new cursor."""
    dispute_id = open_dispute(dsn, now)
    committed = time.monotonic()
    with ChangeCapture(lake.capture_config(dsn)) as capture:
        capture.start()
        capture.run(max_seconds=30)
    captured = time.monotonic()
    execute(lake_apply_job.name, {})
    applied = time.monotonic()
    one_look = {"sensor_wait": SensorWaitResource(seconds=0)}
    tick = late_arrivals_sensor(
        dg.build_sensor_context(instance=instance, cursor=sensor_cursor, resources=one_look)
    )
    ticked = time.monotonic()
    assert isinstance(tick, dg.SensorResult)
    requests = tick.run_requests or []
    assert [r.tags["ledger/dispute"] for r in requests] == [dispute_id]
    for request in requests:
        # A single day comes as a partition key, a range of days as the range tags.
        tags = dict(request.tags)
        if request.partition_key is not None:
            tags[PARTITION_TAG] = request.partition_key
        execute(marts_job.name, tags)
    done = time.monotonic()
    timings = {
        "end to end": done - committed,
        "capture": captured - committed,
        "apply run": applied - captured,
        "sensor + marts run": done - applied,
        "sensor tick": ticked - applied,
    }
    return timings, tick.cursor


def _worker_environment(dsn: str, lake_root: str, state: Path, home: Path) -> dict[str, str]:
    """What a deployment's run worker has: the code location's settings and the instance."""
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "LEDGER_PG_DSN": dsn,
        "LEDGER_LAKE_ROOT": lake_root,
        "LEDGER_STATE_DIR": str(state),
        # No run here calls Stripe or Plaid, but the code location's resources must resolve.
        "STRIPE_API_KEY": "sk_test_unused",
        "STRIPE_API_BASE": "http://127.0.0.1:9",
        "PLAID_HOST": "http://127.0.0.1:9",
        "PLAID_CLIENT_ID": "unused",
        "PLAID_SECRET": "unused",
    }


def _execute_in_new_process(job: str, tags: Mapping[str, str], env: Mapping[str, str]) -> None:
    """Run ``job`` of the code location as a launched run does: a new Python process that loads
    the code location, then executes the run on the instance (``DAGSTER_HOME``).

    Dagster's default run launcher starts each run's worker with ``multiprocessing``'s spawn
    (a fresh interpreter that imports the code location); ``dagster job execute`` does the same
    work in a fresh process, plus the CLI's own import (a little more, not less). Not included:
    the run queue's dequeue interval and the sensors' tick intervals (deployment settings).
    """
    command = [
        sys.executable, "-m", "dagster", "job", "execute",
        "-m", "ledger_assets.definitions", "-a", "defs", "-j", job, "--tags", json.dumps(tags),
    ]  # fmt: skip
    done = subprocess.run(command, env=dict(env), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"{job} failed in its own process:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )


class _ForkedRuns:
    """Runs launched as a deployment launches them (``dagster.yaml``): created on the instance
    with the code location's origin and started by ``ForkServerRunLauncher``, whose workers
    fork from a server that has loaded the code location (and whose dbt forks from a warm dbt
    server); waits for each run to finish. The servers start on the first launch, as in a
    deployment: ``warm_up`` pays that before the measured disputes."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        from dagster._core.code_pointer import ModuleCodePointer
        from dagster._core.origin import RepositoryPythonOrigin

        from ledger_assets.defs.launcher import ForkServerRunLauncher

        self.instance = instance
        self.launcher = ForkServerRunLauncher(watch=["dbt_project/models/**"], warm_dbt=True)
        self.launcher.register_instance(instance)
        pointer = ModuleCodePointer(
            "ledger_assets.definitions", "defs", working_directory=str(PROJECT.parent)
        )
        self.origin = RepositoryPythonOrigin(executable_path=sys.executable, code_pointer=pointer)

    def __call__(self, job_name: str, tags: Mapping[str, str]) -> None:
        from dagster._core.launcher import LaunchRunContext
        from dagster._core.origin import JobPythonOrigin

        from ledger_assets.definitions import defs

        run = self.instance.create_run_for_job(
            job_def=defs.resolve_job_def(job_name), tags=dict(tags),
            job_code_origin=JobPythonOrigin(job_name, self.origin),
        )  # fmt: skip
        self.launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
        while True:
            done = self.instance.get_run_by_id(run.run_id)
            assert done is not None
            if done.is_finished:
                break
            time.sleep(0.05)
        if done.status != dg.DagsterRunStatus.SUCCESS:
            raise RuntimeError(f"{job_name} run {run.run_id} ended {done.status}")

    def warm_up(self) -> None:
        self(lake_apply_job.name, {})  # nothing new to apply: starts the servers

    def close(self) -> None:
        self.launcher.dispose()


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
            # A persistent instance: the launched runs (other processes) record on it too.
            # Its storage is dagster.yaml's (the event log with pooled connections).
            instance = local_instance(folder / "dagster_home")
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

            def in_process(job_name: str, tags: Mapping[str, str]) -> None:
                run_tags = dict(tags)
                partition = run_tags.pop(PARTITION_TAG, None)
                if job_name == lake_apply_job.name:
                    run = lake_apply_job.execute_in_process(
                        instance=instance, tags=run_tags, resources=resources
                    )
                else:
                    run = job.execute_in_process(
                        instance=instance, tags=run_tags, partition_key=partition
                    )
                assert run.success

            worker_env = _worker_environment(dsn, lake.root, state, folder / "dagster_home")

            def launched(job_name: str, tags: Mapping[str, str]) -> None:
                _execute_in_new_process(job_name, tags, worker_env)

            # The forked workers get the worker's environment as the daemon's children would.
            saved_env = dict(os.environ)
            os.environ.update(worker_env)
            forked = _ForkedRuns(instance)
            try:
                forked.warm_up()
                cursor = None
                for path, execute in (
                    ("in process", in_process), ("launched", launched), ("forked", forked),
                ):  # fmt: skip
                    timings, cursor = _dispute_to_marts(dsn, now, lake, instance, execute, cursor)
                    figures.update({f"{path}: {k}": v for k, v in timings.items()})
            finally:
                forked.close()
                os.environ.clear()
                os.environ.update(saved_env)
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
            run_dbt(PROJECT, state, "build", "--exclude-resource-type", "unit_test")
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
    """Wall time for a new process to load the code location (median of 3): the part of a
    launched run's overhead that runs in process leave out."""
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
            Figure(f"{rows} rows: dispute -> lake + marts, runs forked (dagster.yaml), vs naive",
                   f["forked: end to end"], "s", f["naive"], False),
            Figure(f"{rows} rows: same, forked vs launched cold (Dagster's default launcher)",
                   f["forked: end to end"], "s", f["launched: end to end"], False),
            Figure(f"{rows} rows: dispute -> lake + marts, runs launched cold, vs naive",
                   f["launched: end to end"], "s", f["naive"], False),
            Figure(f"{rows} rows: same, runs in process", f["in process: end to end"], "s",
                   None, False),
        ]  # fmt: skip
        for path in ("in process", "launched", "forked"):
            figures += [
                Figure(f"{rows} rows, {path}: {part}", f[f"{path}: {part}"], "s", None, False)
                for part in ("capture", "apply run", "sensor + marts run", "sensor tick")
            ]
        figures += [
            Figure(f"{rows} rows: partitions rewritten (3 disputes)", f["partitions rewritten"],
                   "files"),
            Figure(f"{rows} rows: bytes per kept version", f["bytes per version"], "B"),
        ]  # fmt: skip
    for path in ("forked", "launched", "in process"):
        small, large = (by_size[r][f"{path}: end to end"] for r in sorted(by_size))
        figures.append(Figure(f"10x lake, {path}: end-to-end time ratio (<= 1.2)", large / small,
                              "x"))  # fmt: skip
    overhead_ms = _dagster_run_overhead() * 1e3
    figures.append(Figure("Dagster run overhead, in process (trivial job)", overhead_ms, "ms"))
    figures.append(Figure("new process loads the code location", _run_worker_start(), "s"))
    return figures
