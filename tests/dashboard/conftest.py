"""The dashboard over real marts: the dbt fixtures' seeded lake and marts, plus reconciliation
results, published as a snapshot and served over real HTTP on loopback."""

from __future__ import annotations

import itertools
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from starlette.applications import Starlette

from ledger_assets.dashboard.app import DashboardConfig, build_dashboard
from ledger_assets.dashboard.queries import REPORTS
from ledger_assets.dashboard.tenants import Tenant, postgres_tenants
from ledger_assets.lib.cdc.changelog import atomic_write_bytes
from ledger_assets.lib.marts.contracts import RECONCILIATION_RESULTS, results_dir, write_results
from ledger_assets.lib.marts.export import (
    POINTER,
    SOURCE_TAGS,
    current_snapshot,
    export_marts,
    mart_tables,
)
from ledger_assets.lib.marts.prepare import prepare_marts_database
from tests.dbt.conftest import DbtRun, built_marts, copy_project, seeded_lake
from tests.http_server import serve

__all__ = ["built_marts", "seeded_lake"]

SECRET = "test-dashboard-secret-" + "x" * 40
_LATER = itertools.count(1)
CHECKED_AT = datetime(2025, 4, 16, 9, 30, tzinfo=UTC)


@dataclass(frozen=True)
class Dashboard:
    url: str
    root: Path  # export root: CURRENT + snapshots/
    database: Path
    source_lsn: str
    tenants: dict[int, Tenant]
    #: Two tenants with data, in different zones.
    a: int
    b: int
    mismatch_day: date
    app: Starlette
    seeded_lsn: str | None

    def snapshot_dir(self) -> Path:
        folder = current_snapshot(self.root)
        assert folder is not None
        return folder

    def wait_served(self, stamp: str, timeout: float = 30) -> None:
        """Until the dashboard serves snapshot ``stamp`` (its watcher opens and warms it)."""
        deadline = time.monotonic() + timeout
        while self.app.state.snapshots.current().version != stamp:
            assert time.monotonic() < deadline, f"snapshot {stamp} not served in {timeout} s"
            time.sleep(0.05)

    def mart(self, name: str) -> pa.Table:
        return pq.read_table(self.snapshot_dir() / f"{name}.parquet")

    def report_rows(self, report: str, tenant: int, start: date, end: date) -> pa.Table:
        """The mart's rows of ``report`` for one tenant and period, in the report's order."""
        spec = REPORTS[report]
        rows = self.mart_rows(spec.mart, tenant, spec.date_column, start, end)
        return rows.sort_by([(c, "ascending") for c in spec.order_by])

    def mart_rows(self, name: str, tenant: int, column: str, start: date, end: date) -> pa.Table:
        table = self.mart(name)
        mask = pc.and_(
            pc.equal(table.column("tenant_id"), tenant),
            pc.and_(
                pc.greater_equal(table.column(column), pa.scalar(start)),
                pc.less_equal(table.column(column), pa.scalar(end)),
            ),
        )
        return table.filter(mask)

    def republish(self) -> str:
        """Export the marts again as a new snapshot; returns its stamp once it is served."""
        marts = mart_tables(self.database, "marts")
        exported = export_marts(
            self.database, "marts", marts, self.root,
            source_lsn=self.source_lsn, seeded_lsn=self.seeded_lsn,
        )  # fmt: skip
        self.wait_served(exported.snapshot.name)
        return exported.snapshot.name

    def publish_with_one_day_changed(self, tenant: int, day: date, bump: int) -> str:
        """A new snapshot equal to the current one except tenant's daily P&L revenue of ``day``
        (+bump) and that day's source tag (a later position), as a late dispute would leave it."""
        current = self.snapshot_dir()
        stamp = current.name[:-1] + ("1" if current.name[-1] != "1" else "2")
        folder = current.parent / stamp
        shutil.copytree(current, folder)
        # Each call's tag is new, as a WAL position is: a later test's change must not share the
        # key of an earlier one's (the cache would rightly take them for the same data).
        later = next(_LATER)
        for name, column, delta in (
            ("daily_pnl", "revenue", bump),
            (SOURCE_TAGS, "source_lsn", later),
        ):
            table = pq.read_table(folder / f"{name}.parquet")
            hit = pc.and_(pc.equal(table["tenant_id"], tenant), pc.equal(table["local_date"], day))
            assert pc.sum(hit.cast("int32")).as_py() == 1, name
            values = pc.if_else(hit, pc.add(table[column], delta), table[column])
            table = table.set_column(table.schema.get_field_index(column), column, values)
            pq.write_table(table, folder / f"{name}.parquet")
        pointer = json.loads((self.root / POINTER).read_text())
        atomic_write_bytes(self.root / POINTER, json.dumps({**pointer, "snapshot": stamp}).encode())
        self.wait_served(stamp)
        return stamp


def _results(pnl: pa.Table, tenants: list[int]) -> tuple[pa.Table, date]:
    """A check run's results for the last 10 days of two tenants; one day mismatches."""
    rows: list[dict[str, object]] = []
    mismatch_day = date(1970, 1, 1)
    for tenant in tenants:
        mine = pnl.filter(pc.equal(pnl.column("tenant_id"), tenant))
        last = max(mine.column("local_date").to_pylist())
        currency = mine.column("currency")[0].as_py()
        for offset in range(10):
            day = last - timedelta(days=offset)
            bad = tenant == tenants[0] and offset == 3
            mismatch_day = day if bad else mismatch_day
            rows.append({
                "check_run_id": "run-1", "checked_at": CHECKED_AT, "watermark_lsn": "0/ABCDEF",
                "tenant_id": tenant, "local_date": day, "currency": currency,
                "table_name": "stripe_balance_transactions",
                "status": "mismatch" if bad else "match",
                "pg_rows": 10, "lake_rows": 9 if bad else 10,
                "pg_amount": 1000, "lake_amount": 900 if bad else 1000,
                "pg_fee": 30, "lake_fee": 30, "pg_net": 970, "lake_net": 870 if bad else 970,
                "differing_keys": "txn_missing_1" if bad else None,
            })  # fmt: skip
    return pa.Table.from_pylist(rows, schema=RECONCILIATION_RESULTS), mismatch_day


@pytest.fixture(scope="package")
def dashboard(built_marts: DbtRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    folder = tmp_path_factory.mktemp("dashboard")
    state = folder / "state"
    state.mkdir()
    # A copy of the built marts database: the shared one must keep an empty reconciliation mart.
    shutil.copy(built_marts.database, state / "marts.duckdb")
    lake = built_marts.lake
    tenants = postgres_tenants(lake.dsn)()
    run = DbtRun(copy_project(folder), state, lake)
    prepared = prepare_marts_database(
        run.database, lake.layout, lake.tables, lake.dsn, results_dir(state)
    )
    assert prepared.applied_lsn is not None
    # Pick two tenants with the most P&L activity, in different zones.
    root = state / "marts"
    export_marts(run.database, "marts", ["daily_pnl"], folder / "probe", source_lsn=None)
    probe = pq.read_table(next((folder / "probe" / "snapshots").iterdir()) / "daily_pnl.parquet")
    active = probe.group_by("tenant_id").aggregate([("balance_transaction_count", "sum")])
    ranked = sorted(
        zip(active.column("tenant_id").to_pylist(),
            active.column("balance_transaction_count_sum").to_pylist(), strict=True),
        key=lambda r: -r[1],
    )  # fmt: skip
    a = ranked[0][0]
    b = next(t for t, _ in ranked[1:] if tenants[t].time_zone != tenants[a].time_zone)
    results, mismatch_day = _results(probe, [a, b])
    write_results(results_dir(state), results)
    prepare_marts_database(run.database, lake.layout, lake.tables, lake.dsn, results_dir(state))
    built = run.dbt("build", "--select", "+reconciliation_status", "--exclude-resource-type",
                    "unit_test")  # fmt: skip
    assert built.returncode == 0, built.stdout[-4000:]
    export_marts(
        run.database, "marts", mart_tables(run.database, "marts"), root,
        source_lsn=prepared.applied_lsn, seeded_lsn=prepared.seeded_lsn,
    )  # fmt: skip
    app = build_dashboard(
        DashboardConfig(export_root=root, secret=SECRET, tenant_loader=postgres_tenants(lake.dsn))
    )
    with serve(app) as url:
        yield Dashboard(
            url, root, run.database, prepared.applied_lsn, tenants, a, b, mismatch_day, app,
            prepared.seeded_lsn,
        )  # fmt: skip
    shutil.rmtree(folder, ignore_errors=True)
