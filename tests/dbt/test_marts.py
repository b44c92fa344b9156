"""dbt marts over a real lake: the build, an independent cross-check, and bad input."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ledger_assets.defs.dbt.assets import MANIFEST_PATH, MartsConfig, dbt_build_args
from ledger_assets.lib.lake.layout import LakeLayout, PartitionKey
from ledger_assets.lib.lake.reader import create_lake_view
from ledger_assets.lib.lake.store import read_partitions, write_partition
from ledger_assets.lib.lake.sync import read_lake_state
from ledger_assets.lib.marts.export import (
    SOURCE_POSITIONS,
    SOURCE_TAGS,
    current_snapshot,
    export_marts,
    mart_tables,
)
from ledger_assets.lib.marts.prepare import BuildWindow, LakeNotReadyError, prepare_marts_database
from ledger_assets.lib.marts.project import window_independent_views
from tests.dbt.conftest import DbtRun, Lake, copy_project

PNL_LINES = (
    "gross_charges", "refunds", "disputes", "dispute_reversals", "other_activity", "fees",
    "revenue", "net", "payouts",
)  # fmt: skip

# Plain SQL over the system of record: the day is computed here from `created` and the zone,
# not taken from the lake, and the lines from reporting_category directly.
POSTGRES_DAILY_PNL = """
select bt.currency,
       (bt.created at time zone t.time_zone)::date as local_date,
       coalesce(sum(bt.amount) filter (
           where bt.reporting_category in ('charge', 'partial_capture_reversal')), 0),
       coalesce(sum(bt.amount) filter (
           where bt.reporting_category in ('refund', 'refund_failure')), 0),
       coalesce(sum(bt.amount) filter (where bt.reporting_category = 'dispute'), 0),
       coalesce(sum(bt.amount) filter (where bt.reporting_category = 'dispute_reversal'), 0),
       coalesce(sum(bt.amount) filter (where bt.reporting_category not in (
           'charge', 'partial_capture_reversal', 'refund', 'refund_failure', 'dispute',
           'dispute_reversal', 'fee', 'payout', 'payout_reversal')), 0),
       coalesce(sum(bt.amount) filter (where bt.reporting_category = 'fee'), 0)
         - coalesce(sum(bt.fee) filter (
             where bt.reporting_category not in ('payout', 'payout_reversal')), 0),
       coalesce(sum(bt.amount) filter (where bt.reporting_category in (
           'charge', 'partial_capture_reversal', 'refund', 'refund_failure', 'dispute',
           'dispute_reversal')), 0),
       coalesce(sum(bt.net) filter (
           where bt.reporting_category not in ('payout', 'payout_reversal')), 0),
       coalesce(sum(bt.net) filter (
           where bt.reporting_category in ('payout', 'payout_reversal')), 0)
from ledger.stripe_balance_transactions bt
join ledger.tenants t on t.tenant_id = bt.tenant_id
where bt.tenant_id = %s and (bt.created at time zone t.time_zone)::date = any(%s)
group by 1, 2
"""


def query(database: Path, sql: str, params: list[object] | None = None) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(database), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def test_full_build_passes_and_covers_every_tenant_day(built_marts: DbtRun) -> None:
    rows = query(
        built_marts.database,
        "select count(distinct tenant_id), min(local_date), max(local_date), count(*) "
        "from marts.marts.daily_pnl",
    )
    tenants, first, last, count = rows[0]
    assert tenants == 12
    assert isinstance(first, date)
    assert isinstance(last, date)
    # Every tenant has a row for every day (its default currency): explicit zeros included.
    assert count == 12 * ((last - first).days + 1)


def test_daily_pnl_matches_postgres_exactly_for_random_tenants_and_days(
    built_marts: DbtRun,
) -> None:
    rng = random.Random(7)
    days = [
        r[0]
        for r in query(
            built_marts.database, "select distinct local_date from marts.marts.daily_pnl"
        )
    ]
    compared = 0
    with psycopg.connect(built_marts.lake.dsn) as conn:
        for tenant in rng.sample(range(1, 13), 6):
            picked = sorted(rng.sample(days, 10))
            expected = {
                (str(r[0]), r[1]): tuple(int(str(v)) for v in r[2:])
                for r in conn.execute(POSTGRES_DAILY_PNL, (tenant, picked)).fetchall()
            }
            actual = {
                (str(r[0]), r[1]): tuple(int(str(v)) for v in r[2:])
                for r in query(
                    built_marts.database,
                    f"select currency, local_date, {', '.join(PNL_LINES)} "
                    "from marts.marts.daily_pnl where tenant_id = ? and local_date = any(?)",
                    [tenant, picked],
                )
            }
            zero = (0,) * len(PNL_LINES)
            # Postgres has no row for a day without transactions; the mart has a zero row.
            assert {k: v for k, v in actual.items() if v != zero} == expected, tenant
            assert {k[1] for k in actual} == set(picked)
            compared += len(actual)
    assert compared == 60


def test_monthly_revenue_is_the_sum_of_daily_revenue(built_marts: DbtRun) -> None:
    diff = query(
        built_marts.database,
        """
        select count(*) from marts.marts.monthly_revenue m
        full join (
            select tenant_id, currency, date_trunc('month', local_date)::date as month_start,
                   sum(revenue) as revenue
            from marts.marts.daily_pnl group by all
        ) d using (tenant_id, currency, month_start)
        where m.revenue is distinct from d.revenue
        """,
    )
    assert diff == [(0,)]


def test_disputes_and_cash_flow_are_populated(built_marts: DbtRun) -> None:
    (cohort,) = query(
        built_marts.database,
        "select sum(disputed_charges), sum(charges_succeeded) "
        "from marts.marts.disputes_by_charge_cohort",
    )
    assert 0 < int(str(cohort[0])) < int(str(cohort[1]))
    (bank,) = query(
        built_marts.database,
        "select sum(posted_count), sum(pending_count) from marts.marts.bank_cash_flow",
    )
    assert int(str(bank[0])) > 0
    assert int(str(bank[1])) > 0
    # Every Plaid account has a row on every day of its tenant's spine (daily_pnl's days):
    # a day without transactions is an explicit NO_TRANSACTIONS row, not a missing day.
    quiet, missing = query(
        built_marts.database,
        """
        select
            (select count(*) from marts.marts.bank_cash_flow where category = 'NO_TRANSACTIONS'),
            (select count(*) from marts.marts.daily_pnl d
             join sor.plaid_accounts a using (tenant_id)
             anti join marts.marts.bank_cash_flow b
                 on b.account_id = a.account_id and b.local_date = d.local_date)
        """,
    )[0]
    assert int(str(quiet)) > 0
    assert missing == 0
    assert query(
        built_marts.database, "select count(*) from marts.marts.reconciliation_status"
    ) == [(0,)]


def test_export_publishes_one_complete_snapshot(built_marts: DbtRun, tmp_path: Path) -> None:
    marts = mart_tables(built_marts.database, "marts")
    assert "daily_pnl" in marts
    assert "reconciliation_status" in marts
    first = export_marts(built_marts.database, "marts", marts, tmp_path, source_lsn="0/1")
    second = export_marts(built_marts.database, "marts", marts, tmp_path, keep=1)
    assert current_snapshot(tmp_path) == second.snapshot
    assert not first.snapshot.exists()  # keep=1 removed the older snapshot
    pointer = json.loads((tmp_path / "CURRENT").read_text())
    published = [SOURCE_TAGS if m == SOURCE_POSITIONS else m for m in marts]
    for mart in published:
        table = pq.read_table(second.snapshot / f"{mart}.parquet")
        assert table.num_rows == pointer["rows"][mart]


def test_source_tags_are_the_latest_lake_position_behind_each_day(
    built_marts: DbtRun, tmp_path: Path
) -> None:
    lake = built_marts.lake
    seeded = read_lake_state(lake.layout).seeded_lsn
    assert seeded is not None
    marts = mart_tables(built_marts.database, "marts")
    report = export_marts(built_marts.database, "marts", marts, tmp_path, seeded_lsn=str(seeded))
    tags = pq.read_table(report.snapshot / f"{SOURCE_TAGS}.parquet").to_pylist()
    # One tag per tenant-day of the marts, never 0.
    pnl_days = query(built_marts.database, "select count(distinct (tenant_id, local_date)) "
                     "from marts.marts.daily_pnl")  # fmt: skip
    assert len(tags) == pnl_days[0][0]
    assert min(t["source_lsn"] for t in tags) >= int(seeded) > 0
    # Straight from the lake: the max _lsn of each tenant-day's rows over every table (plus the
    # disputes of that day's charges), floored at the seeding position.
    con = duckdb.connect()
    for name, table in lake.tables.items():
        create_lake_view(con, lake.layout, table, name)
    expected = dict.fromkeys(((t["tenant_id"], t["local_date"]) for t in tags), int(seeded))
    union = " union all ".join(
        f"select tenant_id, local_date, _lsn from {name}" for name in lake.tables
    )
    rows = con.execute(
        f"select tenant_id, local_date, max(_lsn) from ({union}) group by all "
        "union all select d.tenant_id, c.local_date, max(d._lsn) from stripe_disputes d "
        "join stripe_charges c on c.id = d.charge group by all"
    ).fetchall()
    for tenant, day, lsn in rows:
        if (tenant, day) in expected:
            expected[(tenant, day)] = max(expected[(tenant, day)], int(lsn))
    assert {(t["tenant_id"], t["local_date"]): t["source_lsn"] for t in tags} == expected


# ------------------------------------------------------------------ windows and bad input


@pytest.fixture(scope="module")
def scratch(seeded_lake: Lake, tmp_path_factory: pytest.TempPathFactory) -> DbtRun:
    """A separate marts database for tests that change the lake (each restores it)."""
    folder = tmp_path_factory.mktemp("scratch")
    return DbtRun(copy_project(folder), folder / "state", seeded_lake)


@contextmanager
def overlay(lake: Lake, table: str, tenant: int, day: date, rows: pa.Table) -> Iterator[None]:
    """Replace one lake partition for the duration of the block."""
    key = PartitionKey(table, tenant, day)
    write_partition(lake.layout, lake.tables[table], key, rows)
    try:
        yield
    finally:
        lake.layout.overlay_file(key).unlink()


def window(day: date) -> str:
    end = date.fromordinal(day.toordinal() + 1)
    return json.dumps({"start_date": day.isoformat(), "end_date": end.isoformat()})


def build_day(run: DbtRun, day: date, mart: str = "daily_pnl") -> str:
    """Build ``mart`` and its parents for one day; returns dbt's output (asserting success)."""
    result = run.dbt(
        "build", "--vars", window(day), "--select", f"+{mart}",
        "--exclude-resource-type", "unit_test", "--indirect-selection", "cautious",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:]
    return result.stdout


def pnl_row(run: DbtRun, tenant: int, day: date) -> list[tuple[object, ...]]:
    return query(
        run.database,
        "select revenue, net, balance_transaction_count from marts.marts.daily_pnl "
        "where tenant_id = ? and local_date = ?",
        [tenant, day],
    )


def test_an_empty_lake_partition_is_an_explicit_zero_row_and_only_the_window_rebuilds(
    scratch: DbtRun,
) -> None:
    lake, tenant = scratch.lake, 1
    day, other = date(2025, 3, 10), date(2025, 3, 11)
    bts = lake.tables["stripe_balance_transactions"]
    scratch.prepare()
    for d in (day, other):
        build_day(scratch, d)
    before = pnl_row(scratch, tenant, day)
    assert int(str(before[0][2])) > 0
    with overlay(lake, bts.name, tenant, day, bts.schema.empty_table()):
        scratch.prepare()
        # A run for another day leaves this day alone ...
        build_day(scratch, other)
        assert pnl_row(scratch, tenant, day) == before
        # ... and the run for this day turns the now-empty partition into an explicit zero row.
        build_day(scratch, day)
        assert pnl_row(scratch, tenant, day) == [(0, 0, 0)]
    scratch.prepare()


def bank_rows(run: DbtRun, tenant: int, day: date) -> list[tuple[object, ...]]:
    return query(
        run.database,
        "select account_id, category, posted_count + pending_count, posted_inflow, posted_outflow,"
        " pending_inflow, pending_outflow from marts.marts.bank_cash_flow"
        " where tenant_id = ? and local_date = ? order by all",
        [tenant, day],
    )


def test_an_empty_bank_partition_is_an_explicit_zero_row_per_account(scratch: DbtRun) -> None:
    lake, tx = scratch.lake, scratch.lake.tables["plaid_transactions"]
    scratch.prepare()
    # A tenant-day with transactions in several categories: after the partition is emptied,
    # none of those rows may survive the day's rebuild.
    (picked,) = query(
        scratch.database,
        "select tenant_id, local_date from lake.plaid_transactions where local_date between "
        "'2025-03-01' and '2025-03-31' group by all order by count(distinct category_primary) "
        "desc, 1, 2 limit 1",
    )
    tenant, day = int(str(picked[0])), picked[1]
    assert isinstance(day, date)
    accounts = [
        r[0]
        for r in query(
            scratch.database,
            "select account_id from sor.plaid_accounts where tenant_id = ? order by 1",
            [tenant],
        )
    ]
    build_day(scratch, day, "bank_cash_flow")
    before = bank_rows(scratch, tenant, day)
    assert len({r[1] for r in before}) > 1
    assert sum(int(str(r[2])) for r in before) > 0
    with overlay(lake, tx.name, tenant, day, tx.schema.empty_table()):
        scratch.prepare()
        build_day(scratch, day, "bank_cash_flow")
        assert bank_rows(scratch, tenant, day) == [
            (account, "NO_TRANSACTIONS", 0, 0, 0, 0, 0) for account in accounts
        ]
    scratch.prepare()
    build_day(scratch, day, "bank_cash_flow")
    assert bank_rows(scratch, tenant, day) == before


@pytest.mark.parametrize(
    ("table", "tenant", "mart", "message"),
    [
        ("stripe_balance_transactions", 2, "daily_pnl",
         "on balance transactions of tenant 2 on 2025-03-12"),
        ("plaid_transactions", 3, "bank_cash_flow", "on Plaid transactions of account"),
    ],
)  # fmt: skip
def test_an_unknown_currency_fails_the_build_loudly(
    scratch: DbtRun, table: str, tenant: int, mart: str, message: str
) -> None:
    lake, day = scratch.lake, date(2025, 3, 12)
    lake_table = lake.tables[table]
    rows = read_partitions(lake.layout, lake_table, [PartitionKey(table, tenant, day)])
    assert rows.num_rows > 0
    currency = rows.column("currency")
    bad = rows.set_column(
        rows.schema.get_field_index("currency"),
        "currency",
        pa.array(["xts", *currency.to_pylist()[1:]], currency.type),
    )
    with overlay(lake, table, tenant, day, bad):
        scratch.prepare()
        built = scratch.dbt(
            "build", "--vars", window(day), "--select", f"+{mart}",
            "--exclude-resource-type", "unit_test", "--indirect-selection", "cautious",
        )  # fmt: skip
    scratch.prepare()
    # The model that reads the currency stops on it, naming where it is (no data test runs
    # first: the check is part of the model's one pass over the rows).
    assert built.returncode != 0
    assert f"unknown currency 'xts' {message}" in built.stdout


def test_a_lake_row_written_twice_fails_its_grain_test(scratch: DbtRun) -> None:
    lake, table, day = scratch.lake, "stripe_charges", date(2025, 3, 12)
    rows = read_partitions(lake.layout, lake.tables[table], [PartitionKey(table, 2, day)])
    assert rows.num_rows > 1
    with overlay(lake, table, 2, day, pa.concat_tables([rows, rows.slice(0, 1)])):
        scratch.prepare()
        built = scratch.dbt(
            "build", "--vars", window(day), "--select", "stg_stripe__charges",
            "--exclude-resource-type", "unit_test",
        )  # fmt: skip
    scratch.prepare()
    assert built.returncode != 0
    assert "FAIL 1 unique_and_not_null_stg_stripe__charges_charge_id" in built.stdout


def test_a_dispute_whose_charge_is_not_in_the_lake_fails_the_build(scratch: DbtRun) -> None:
    lake = scratch.lake
    scratch.prepare()
    ((charge, dispute_day),) = query(
        scratch.database,
        "select charge, local_date from lake.stripe_disputes order by local_date, id limit 1",
    )
    ((tenant, charge_day),) = query(
        scratch.database,
        "select tenant_id, local_date from lake.stripe_charges where id = ?",
        [charge],
    )
    assert isinstance(dispute_day, date)
    assert isinstance(charge_day, date)
    charges = lake.tables["stripe_charges"]
    key = PartitionKey(charges.name, int(str(tenant)), charge_day)
    rows = read_partitions(lake.layout, charges, [key])
    without = rows.filter(pc.not_equal(rows.column("id"), charge))
    assert without.num_rows == rows.num_rows - 1
    with overlay(lake, charges.name, key.tenant_id, charge_day, without):
        scratch.prepare()
        built = scratch.dbt(
            "build", "--vars", window(dispute_day),
            "--select", "+int_disputes_joined_to_charges", "--exclude", "stg_stripe__charges",
            "--exclude-resource-type", "unit_test",
        )  # fmt: skip
    scratch.prepare()
    assert built.returncode != 0
    assert "FAIL 1 not_null_int_disputes_joined_to_charges_charge_local_date" in built.stdout


def test_marts_refuse_a_lake_that_is_not_seeded(seeded_lake: Lake, tmp_path: Path) -> None:
    with pytest.raises(LakeNotReadyError, match="not seeded"):
        prepare_marts_database(
            tmp_path / "marts.duckdb",
            LakeLayout(tmp_path / "no-lake"),
            seeded_lake.tables,
            seeded_lake.dsn,
            tmp_path / "results",
        )


# ------------------------------------------------------------------ windowed builds

WINDOWED_MARTS = {
    # mart -> the rows a one-day run over day $d rebuilds
    "daily_pnl": "local_date = $d",
    "disputes_by_activity_date": "local_date = $d",
    "bank_cash_flow": "local_date = $d",
    "stripe_payouts": "local_date = $d",
    "stripe_balance_roll_forward": "local_date >= $d",
    "monthly_revenue": "month_start = date_trunc('month', $d)",
    "disputes_by_charge_cohort": "cohort_date = $d or exists (select 1 from "
    "intermediate.int_disputes_joined_to_charges j where j.local_date = $d and "
    "j.tenant_id = disputes_by_charge_cohort.tenant_id and "
    "j.currency = disputes_by_charge_cohort.currency and "
    "j.charge_local_date = disputes_by_charge_cohort.cohort_date)",
    "source_positions": "local_date = $d or exists (select 1 from "
    "intermediate.int_disputes_joined_to_charges j where j.local_date = $d and "
    "j.tenant_id = source_positions.tenant_id and "
    "j.charge_local_date = source_positions.local_date)",
}


def test_a_windowed_build_gives_the_full_builds_rows(built_marts: DbtRun, tmp_path: Path) -> None:
    """Delete what a one-day run over day d must rebuild from a copy of the full build, run it
    over views scoped to d's files, and get the full build's tables back, row for row."""
    (late,) = query(
        built_marts.database,
        "select local_date from intermediate.int_disputes_joined_to_charges "
        "where charge_local_date < local_date - 7 group by all order by count(*) desc, 1 limit 1",
    )
    day = late[0]
    assert isinstance(day, date)
    run = DbtRun(copy_project(tmp_path), tmp_path / "state", built_marts.lake)
    run.state_dir.mkdir()
    shutil.copy(built_marts.database, run.database)
    con = duckdb.connect(str(run.database))
    try:
        for mart, predicate in WINDOWED_MARTS.items():
            deleted = con.execute(
                f"delete from marts.marts.{mart} where {predicate.replace('$d', '?')}",
                [day] * predicate.count("$d"),
            ).fetchall()
            assert deleted[0][0] > 0, mart
    finally:
        con.close()
    prepared = run.prepare(BuildWindow(day, date.fromordinal(day.toordinal() + 1)))
    # Only the window's files and the days its rows reach: the late disputes' charge days.
    assert prepared.reach_days["stripe_charges"] > 0
    total_days = len(built_marts.lake.layout.base_files("stripe_charges"))
    assert prepared.lake_files["stripe_charges"] < total_days / 3
    # As the Dagster asset runs it: the views of the full build kept (but the day spine), the
    # project parsed without the vars.
    kept = window_independent_views(json.loads(MANIFEST_PATH.read_text()))
    assert "stg_stripe__charges" in kept
    assert "int_tenant_days" not in kept, "the day spine reads the window"
    days = dg.TimeWindow(
        datetime.combine(day, time()), datetime.combine(day, time()) + timedelta(1)
    )
    args = dbt_build_args(days, MartsConfig(), kept)
    built = run.dbt(*args, runner=True)
    assert built.returncode == 0, built.stdout[-4000:]
    assert "START sql view model staging.stg_stripe__charges" not in built.stdout
    for mart in [*WINDOWED_MARTS, "reconciliation_status"]:
        sql = f"select * from marts.marts.{mart} order by all"
        assert query(run.database, sql) == query(built_marts.database, sql), mart
    # The views now cover one day's reach: a run asking for more is refused before it starts.
    wider = json.dumps({"start_date": "2025-02-01", "end_date": "2025-04-01"})
    refused = run.dbt("run", "--vars", wider, "--select", "daily_pnl")
    assert refused.returncode != 0
    assert "the lake views cover only" in refused.stdout
