"""End to end: a late dispute through the Stripe stand-in's signed webhook reaches the marts.

Three years of data (3 tenants, few rows), a lake, marts built before the dispute. The stand-in
opens a dispute on a charge 90-180 days old and delivers its events signed, duplicated and out
of order to the real webhook receiver; ingestion applies them; CDC captures; the lake apply run
rewrites exactly the dispute's partitions; the late-arrivals sensor asks for exactly the old
mart day; dbt builds it and the marts are published. The dashboard keeps the cached report of an
untouched period (same ETag, 304) and shows the dispute in its cohort's period; and the
pre-dispute report, rebuilt by ``reproduce_marts_job`` as of its source position, equals the
published pre-dispute snapshot.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import httpx
import psycopg
import pytest
from dagster._core.storage.dagster_run import DagsterRun
from psycopg.conninfo import conninfo_to_dict

from ledger_assets.dashboard.app import DashboardConfig, build_dashboard
from ledger_assets.dashboard.auth import mint_token
from ledger_assets.dashboard.tenants import postgres_tenants
from ledger_assets.defs.cdc.sensors import cdc_capture_sensor
from ledger_assets.defs.dbt.assets import MartsConfig, dbt_build_args
from ledger_assets.defs.dbt.reproduce import reproduce_marts_job
from ledger_assets.defs.dbt.resources import MartsResource
from ledger_assets.defs.dbt.schedules import CURRENT_TAG, marts_job
from ledger_assets.defs.disputes.sensors import DISPUTE_TAG, PARTITIONS_TAG, late_arrivals_sensor
from ledger_assets.defs.lake.jobs import lake_apply_job
from ledger_assets.defs.resources import LakeResource, PostgresResource, SensorWaitResource
from ledger_assets.lib.cdc import slot as slots
from ledger_assets.lib.cdc.lsn import Lsn
from ledger_assets.lib.ingest.inbox import apply_stripe_events
from ledger_assets.lib.lake.reader import create_lake_view
from ledger_assets.lib.lake.sync import build_lake, lake_tables
from ledger_assets.lib.lake.versions import (
    create_lake_view_as_of,
    mark_published,
    stored_versions,
)
from ledger_assets.lib.marts.contracts import results_dir
from ledger_assets.lib.marts.export import current_snapshot, export_marts, mart_tables
from ledger_assets.lib.marts.prepare import prepare_marts_database
from ledger_assets.lib.marts.project import MARTS_SCHEMA
from ledger_assets.lib.standins import DEFAULT_STRIPE_WEBHOOK_SECRET, LiveRates, StandinServers
from ledger_assets.lib.standins.webhooks import DeliveryPolicy
from ledger_assets.lib.synth.load import seed_database
from ledger_assets.lib.synth.spec import SeedSpec
from ledger_assets.lib.webhooks.receiver import ReceiverConfig, build_receiver
from tests.dbt.conftest import DbtRun, Lake, copy_project
from tests.http_server import serve

END = datetime.now(UTC).date()
SPEC = SeedSpec(
    seed=23, tenants=3, start=END - timedelta(days=3 * 365), days=3 * 365, target_rows=20_000,
    dispute_rate=0.02, refund_rate=0.05, tenant_size_sigma=0.3,
)  # fmt: skip
#: Only late disputes: no new charges, refunds, payouts or bank activity in the tick.
ONLY_DISPUTES = LiveRates(
    charges=0, refunds=0, late_disputes=1.5, payout_chance=0, plaid_pending=0,
    history_pending_posts=0,
)  # fmt: skip
#: Lake folders that change with every capture (the change log, the watermark).
UNSTABLE = {"_changelog", "_state", "_pins"}
SECRET = "test-e2e-dashboard-secret-" + "x" * 40


class Horizon:
    """The stand-in's clock: the history's end (no history payout is due yet)."""

    def __call__(self) -> float:
        return datetime.combine(END, datetime.min.time(), UTC).timestamp()


def lake_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*.parquet")
        if p.relative_to(root).parts[0] not in UNSTABLE
    }


@pytest.fixture
def env(migrated_dsn: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    seed_database(migrated_dsn, SPEC)
    name = str(conninfo_to_dict(migrated_dsn)["dbname"])
    lake = LakeResource(root=str(tmp_path / "lake"), slot_name=f"s_{name}", publication=f"p_{name}")
    build_lake(lake.capture_config(migrated_dsn), lake.layout)
    yield {
        "dsn": migrated_dsn,
        "lake": lake,
        "resources": {
            "postgres": PostgresResource(dsn=migrated_dsn),
            "lake": lake,
            "sensor_wait": SensorWaitResource(seconds=0),  # one look per tick, by hand
        },
        "tmp": tmp_path,
    }
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        slots.drop_slot(conn, f"s_{name}")


def build_marts(run: DbtRun, *args: str) -> str:
    """Prepare, build and publish the marts as the marts asset does; returns the lake
    watermark the published snapshot records (its ``source_lsn``)."""
    prepared = prepare_marts_database(
        run.database, run.lake.layout, run.lake.tables, run.lake.dsn, results_dir(run.state_dir)
    )
    read_by_ns = time.time_ns()
    result = run.dbt(*args)
    assert result.returncode == 0, result.stdout[-4000:]
    export_marts(
        run.database, MARTS_SCHEMA, mart_tables(run.database, MARTS_SCHEMA), exported(run),
        source_lsn=prepared.applied_lsn, seeded_lsn=prepared.seeded_lsn,
    )  # fmt: skip
    mark_published(run.lake.layout, read_by_ns)
    assert prepared.applied_lsn is not None
    return prepared.applied_lsn


def exported(run: DbtRun) -> Path:
    """The export root the dashboard reads (``MartsResource.export_root``)."""
    return run.state_dir / "marts"


def published_marts(snapshot: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every published mart's rows (and the source tags), in a stable order."""
    with duckdb.connect() as con:
        return {
            p.stem: con.execute("select * from read_parquet(?) order by all", [str(p)]).fetchall()
            for p in sorted(snapshot.glob("*.parquet"))
        }


def wait_served(app: Any, stamp: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while app.state.snapshots.current().version != stamp:
        assert time.monotonic() < deadline, f"snapshot {stamp} not served in {timeout} s"
        time.sleep(0.05)


def cohort_report(run: DbtRun, tenant: int, day: date) -> dict[str, Any]:
    """The tenant's cohort row of ``day`` (its charges' currency) in the marts."""
    with duckdb.connect(str(run.database), read_only=True) as con:
        cursor = con.execute(
            "select * from marts.marts.disputes_by_charge_cohort where tenant_id = ? "
            "and cohort_date = ? and charges_succeeded > 0",
            [tenant, day],
        )
        rows = cursor.fetchall()
        names = [d[0] for d in cursor.description]
    assert len(rows) == 1
    return dict(zip(names, rows[0], strict=True))


def lake_rows(con: duckdb.DuckDBPyConnection, view: str) -> list[tuple[Any, ...]]:
    return con.execute(f"select * exclude (_lsn) from {view} order by all").fetchall()


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def test_a_late_dispute_rewrites_only_its_partitions_and_its_old_mart_day(
    env: dict[str, Any], stack: ExitStack
) -> None:
    dsn, lake = env["dsn"], env["lake"]
    with psycopg.connect(dsn) as conn:
        tables = lake_tables(conn)
    run = DbtRun(copy_project(env["tmp"]), env["tmp"] / "state", Lake(dsn, lake.layout, tables))
    before_lsn = build_marts(run, "build", "--exclude-resource-type", "unit_test")
    # The pre-dispute report as published (the folder itself is deleted a few builds later).
    pre_snapshot = current_snapshot(exported(run))
    assert pre_snapshot is not None
    pre_report = published_marts(pre_snapshot)
    app = build_dashboard(
        DashboardConfig(exported(run), SECRET, tenant_loader=postgres_tenants(dsn))
    )
    dashboard = stack.enter_context(serve(app))
    con = duckdb.connect()
    before_rows = {}
    for name, table in tables.items():
        before_rows[name] = lake_rows(con, create_lake_view(con, lake.layout, table, f"b_{name}"))
    before = lake_hashes(lake.layout.root)

    # 1. The stand-in opens late disputes and delivers them, signed, duplicated, reordered.
    delivery = DeliveryPolicy(seed=3, duplicate_share=0.5, delay_share=0.5, max_delay_s=0.3)
    config = ReceiverConfig(dsn, DEFAULT_STRIPE_WEBHOOK_SECRET, lambda kid: None)
    with (
        serve(build_receiver(config)) as url,
        StandinServers.start(
            SPEC, clock=Horizon(), delivery=delivery, rates=ONLY_DISPUTES,
            stripe_webhook_url=f"{url}/webhooks/stripe",
        ) as servers,
    ):  # fmt: skip
        servers.tick(1)
        assert servers.runtime is not None
        deadline = time.monotonic() + 20
        while servers.runtime.deliverer.pending and time.monotonic() < deadline:
            time.sleep(0.05)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert apply_stripe_events(conn).applied >= 2
        new = conn.execute(
            """
            select d.id, d.tenant_id, (d.created at time zone t.time_zone)::date,
                   (c.created at time zone t.time_zone)::date, c.disputed,
                   array(select (b.created at time zone t.time_zone)::date::text
                         from ledger.stripe_balance_transactions b
                         where b.id = any(d.balance_transactions))
            from ledger.stripe_disputes d join ledger.stripe_charges c on c.id = d.charge
            join ledger.tenants t on t.tenant_id = d.tenant_id
            where d.created >= %s order by d.id
            """,
            (datetime.fromtimestamp(Horizon()(), UTC),),
        ).fetchall()
    assert new, "the tick opened a late dispute"
    for _, _, opened, cohort, disputed, bt_days in new:
        assert (opened - cohort).days >= 90
        assert disputed is True
        assert bt_days

    # 2. Capture and apply through Dagster; the apply run records the disputes.
    instance = dg.DagsterInstance.ephemeral()
    # The marts were fully built above (outside Dagster): record it as the schedule's first run.
    instance.add_run(DagsterRun(job_name=marts_job.name, run_id="f" * 36,
                                status=dg.DagsterRunStatus.SUCCESS,
                                tags={CURRENT_TAG: "full_refresh"}))  # fmt: skip
    resources = env["resources"]
    capture = cdc_capture_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert isinstance(capture, dg.RunRequest)
    assert lake_apply_job.execute_in_process(resources=resources, instance=instance).success

    # 3. Exactly the dispute's partitions changed; every other file is byte-identical.
    after = lake_hashes(lake.layout.root)
    changed = {p for p in after if p.split("/")[1] != "_versions" and before.get(p) != after[p]}
    expected = set()
    for _, tenant, opened, cohort, _, bt_days in new:
        expected |= {
            f"stripe_disputes/overlay/tenant_id={tenant}/local_date={opened}/data.parquet",
            f"stripe_charges/overlay/tenant_id={tenant}/local_date={cohort}/data.parquet",
        }
        expected |= {
            f"stripe_balance_transactions/overlay/tenant_id={tenant}/local_date={d}/data.parquet"
            for d in bt_days
        }
    assert changed == expected
    assert set(before) <= set(after)
    versions = {
        f"{v.key.table}/overlay/tenant_id={v.key.tenant_id}/local_date={v.key.local_date}/"
        "data.parquet"
        for name in tables
        for v in stored_versions(lake.layout, name)
    }
    assert versions == expected

    # 4. The sensor asks for exactly the old cohort days (cohorts a week apart or less share a
    #    run over their range), naming every dispute in the run's key and tags.
    ticked = late_arrivals_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert isinstance(ticked, dg.SensorResult)
    requests = ticked.run_requests or []

    def days_of(request: dg.RunRequest) -> tuple[date, date]:
        span = request.partition_key_range
        if span is None:
            assert request.partition_key is not None
            return date.fromisoformat(request.partition_key), date.fromisoformat(
                request.partition_key
            )
        return date.fromisoformat(span.start), date.fromisoformat(span.end)

    spans = [days_of(r) for r in requests]
    cohort_days = {cohort for _, _, _, cohort, _, _ in new}
    assert all(any(lo <= day <= hi for lo, hi in spans) for day in cohort_days)
    assert {lo for lo, _ in spans} | {hi for _, hi in spans} <= cohort_days
    assert sorted(d for r in requests for d in r.tags[DISPUTE_TAG].split(",")) == sorted(
        dispute_id for dispute_id, *_ in new
    )
    for request in requests:
        for dispute_id in request.tags[DISPUTE_TAG].split(","):
            assert dispute_id in (request.run_key or "")
        assert "stripe_charges:" in request.tags[PARTITIONS_TAG]
    again = late_arrivals_sensor(
        dg.build_sensor_context(instance=instance, cursor=ticked.cursor, resources=resources)
    )
    assert isinstance(again, dg.SensorResult)
    assert not again.run_requests

    # The dashboard serves the pre-dispute snapshot; a tenant's cohort report, cached for a
    # period that covers a disputed charge's day and for one far from every touched day.
    _, tenant, _, cohort_day, _, _ = new[0]
    touched = {
        day for _, t, opened, cohort, _, bt_days in new if t == tenant
        for day in (opened, cohort, *map(date.fromisoformat, bt_days))
    }  # fmt: skip
    untouched_end = min(touched) - timedelta(days=45)
    periods = {
        "covering": (cohort_day - timedelta(days=5), cohort_day + timedelta(days=5)),
        "untouched": (untouched_end - timedelta(days=29), untouched_end),
    }
    auth = {"Authorization": f"Bearer {mint_token(SECRET, tenant_id=tenant)}"}
    path = f"{dashboard}/api/tenants/{tenant}/reports/disputes_cohort"

    def report_of(period: str, **headers: str) -> httpx.Response:
        start, end = periods[period]
        return httpx.get(
            path, params={"start": start.isoformat(), "end": end.isoformat()},
            headers={**auth, **headers}, timeout=30,
        )  # fmt: skip

    def cohort_row(response: httpx.Response) -> dict[str, Any]:
        """The cohort day's row of the charges' currency (the day spine adds a zero row in the
        tenant's default currency when they differ)."""
        body = response.json()
        rows = [dict(zip(body["columns"], r, strict=True)) for r in body["rows"]]
        (row,) = [
            r for r in rows if r["cohort_date"] == cohort_day.isoformat() and r["charges_succeeded"]
        ]
        return row

    cached = {name: report_of(name) for name in periods}
    assert all(r.status_code == 200 and r.json()["rows"] for r in cached.values())
    assert cached["untouched"].json()["meta"]["source_lsn"] == before_lsn

    # 5. dbt builds each requested day; its cohort row now shows the dispute.
    cohorts = {(tenant, cohort) for _, tenant, _, cohort, _, _ in new}
    old_reports = {c: cohort_report(run, *c) for c in cohorts}
    for lo, hi in spans:
        start = datetime(lo.year, lo.month, lo.day, tzinfo=UTC)
        window = dg.TimeWindow(start, start + timedelta(days=(hi - lo).days + 1))
        build_marts(run, *dbt_build_args(window, MartsConfig()))
    # The dispute's balance transactions are recent: the schedule's range run over the recent
    # days rebuilds them (marts_schedule), and the daily P&L shows the money moving.
    cash_days = sorted({date.fromisoformat(d) for *_, bt_days in new for d in bt_days})
    start = datetime.combine(cash_days[0], datetime.min.time(), UTC)
    window = dg.TimeWindow(start, start + timedelta(days=(cash_days[-1] - cash_days[0]).days + 1))
    build_marts(run, *dbt_build_args(window, MartsConfig()))
    with duckdb.connect(str(run.database), read_only=True) as db:
        for _, tenant_id, _, _, _, bt_days in new:
            (moved_money,) = db.execute(
                "select sum(disputes) from marts.marts.daily_pnl where tenant_id = ? "
                "and local_date = any(?)", [tenant_id, [date.fromisoformat(d) for d in bt_days]],
            ).fetchone() or (None,)  # fmt: skip
            assert moved_money, "the dispute's withdrawal is in its day's P&L"
    for cohort_key, old_report in old_reports.items():
        opened = sum(1 for _, t, _, c, _, _ in new if (t, c) == cohort_key)
        report = cohort_report(run, *cohort_key)
        assert report["disputes_open"] == old_report["disputes_open"] + opened
        assert report["disputed_amount"] > old_report["disputed_amount"]
        assert report["charges_succeeded"] == old_report["charges_succeeded"]

    # 6. The dashboard serves the post-dispute snapshot: the untouched period's cached report
    #    keeps its ETag (a revalidation is a 304); the cohort's period has a new one and shows
    #    the dispute.
    post_snapshot = current_snapshot(exported(run))
    assert post_snapshot is not None
    assert post_snapshot != pre_snapshot
    wait_served(app, post_snapshot.name)
    kept = report_of("untouched")
    assert kept.json()["meta"]["snapshot"] == post_snapshot.name
    assert kept.headers["etag"] == cached["untouched"].headers["etag"]
    assert kept.json()["rows"] == cached["untouched"].json()["rows"]
    revalidated = report_of("untouched", **{"If-None-Match": kept.headers["etag"]})
    assert revalidated.status_code == 304
    moved = report_of("covering", **{"If-None-Match": cached["covering"].headers["etag"]})
    assert moved.status_code == 200
    assert moved.headers["etag"] != cached["covering"].headers["etag"]
    opened_here = sum(1 for _, t, _, c, _, _ in new if (t, c) == (tenant, cohort_day))
    assert cohort_row(moved)["disputes_open"] == (
        cohort_row(cached["covering"])["disputes_open"] + opened_here
    )

    # 7. The pre-dispute lake, as of the watermark the first marts build recorded, is intact.
    for name, table in tables.items():
        view = create_lake_view_as_of(con, lake.layout, table, Lsn.parse(before_lsn), f"a_{name}")
        assert lake_rows(con, view) == before_rows[name], name
    now = create_lake_view(con, lake.layout, tables["stripe_charges"], "now_charges")
    assert lake_rows(con, now) != before_rows["stripe_charges"]

    # 8. The pre-dispute report, reproduced by dbt as of its source position through the job an
    #    operator launches, equals the published one exactly (every mart and the source tags),
    #    while the current marts show the dispute. The live marts are left as they were.
    live = published_marts(post_snapshot)
    assert live["disputes_by_charge_cohort"] != pre_report["disputes_by_charge_cohort"]
    assert live["daily_pnl"] != pre_report["daily_pnl"]
    live_database = run.database.read_bytes()
    reproduced = reproduce_marts_job.execute_in_process(
        run_config={"ops": {"reproduce_marts_as_of": {"config": {"as_of_lsn": before_lsn}}}},
        resources={**env["resources"], "marts": MartsResource(state_dir=str(run.state_dir))},
        instance=instance,
    )  # fmt: skip
    assert reproduced.success
    folder = Path(reproduced.output_for_node("reproduce_marts_as_of"))
    assert run.state_dir.resolve() in folder.parents
    again = published_marts(folder)
    assert set(again) == set(pre_report)
    for mart in ("daily_pnl", "disputes_by_charge_cohort"):
        assert again[mart] == pre_report[mart], mart
    assert again == pre_report
    assert current_snapshot(exported(run)) == post_snapshot
    assert run.database.read_bytes() == live_database
    (step,) = [
        e for e in reproduced.all_node_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT
    ]
    metadata = step.step_output_data.metadata
    assert sum(metadata["partition_versions_read"].value.values()) == len(versions)
