"""The snapshot's day files: ICU days per zone, one sorted file per day, typed as the lake."""

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ledger_assets.lib.lake.layout import LakeLayout
from ledger_assets.lib.lake.schema import LakeTable, load_lake_table
from ledger_assets.lib.lake.snapshot import snapshot_table
from ledger_assets.lib.sor.catalog import MIRRORED_TABLES

CHARGES = next(t for t in MIRRORED_TABLES if t.name == "stripe_charges")
PLAID = next(t for t in MIRRORED_TABLES if t.name == "plaid_transactions")
# Whole-hour, 45-minute and +14 h offsets, both hemispheres' DST, and two tenants sharing a zone
# (one CASE branch serves both).
ZONES = {
    1: "America/New_York",
    2: "Asia/Kathmandu",
    3: "Pacific/Kiritimati",
    4: "Australia/Lord_Howe",
    5: "America/New_York",
    6: "Europe/London",
}


def add_tenants(conn: psycopg.Connection[tuple[object, ...]], zones: dict[int, str]) -> None:
    for tenant, zone in zones.items():
        conn.execute(
            "insert into ledger.tenants (tenant_id, name, time_zone, default_currency, "
            "stripe_account_id) values (%s, 'x', %s, 'usd', %s)",
            (tenant, zone, f"acct_{tenant}"),
        )


def add_charges(
    conn: psycopg.Connection[tuple[object, ...]], rows: list[tuple[int, datetime]]
) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "insert into ledger.stripe_charges (id, tenant_id, amount, amount_captured, "
            "amount_refunded, currency, status, paid, captured, refunded, disputed, created, "
            "metadata) values (%s, %s, 1, 1, 0, 'usd', 'succeeded', true, true, false, false, "
            '%s, \'{"k": "v"}\')',
            [(f"ch_{i:05d}", t, created) for i, (t, created) in enumerate(rows)],
        )


@pytest.fixture
def charges(migrated_dsn: str) -> LakeTable:
    rng = random.Random(7)
    # Instants around every local midnight and DST change of 2024-03 and 2024-10/11, in random
    # heap order (the snapshot, not the insert order, must sort them).
    start = datetime(2024, 3, 8, tzinfo=UTC)
    rows = []
    for tenant in ZONES:
        for _ in range(300):
            spread = timedelta(minutes=rng.randrange(0, 60 * 24 * 5))
            base = start if rng.random() < 0.5 else datetime(2024, 10, 25, tzinfo=UTC)
            rows.append((tenant, base + spread + timedelta(microseconds=rng.randrange(10**6))))
    rng.shuffle(rows)
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        add_tenants(conn, ZONES)
        add_charges(conn, rows)
        return load_lake_table(conn, CHARGES)


def test_days_are_the_applys_icu_days_and_each_day_is_one_sorted_file(
    migrated_dsn: str, tmp_path: Path, charges: LakeTable
) -> None:
    layout = LakeLayout(tmp_path / "lake")
    report = snapshot_table(migrated_dsn, layout, charges, ZONES)
    assert report.rows == 6 * 300
    files = layout.base_files("stripe_charges")
    assert report.days == len(files) > 10
    assert all(sorted(p.name for p in Path(f).parent.iterdir()) == ["data.parquet"] for f in files)
    assert not list(layout.root.glob(".*"))  # staging and spill folders are gone
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    con.register("zones", pa.table({"tenant_id": list(ZONES), "zone": list(ZONES.values())}))
    for path in files:
        day = pq.read_table(path)
        assert day.schema.equals(charges.schema)
        ordered = day.sort_by([("tenant_id", "ascending"), ("id", "ascending")])
        assert day.equals(ordered), path
        assert set(day.column("_lsn").to_pylist()) == {0}
        folder_day = path.parent.name.removeprefix("local_date=")
        assert {d.isoformat() for d in day.column("local_date").to_pylist()} == {folder_day}
        # A per-row zone column, independent of the one-branch-per-zone CASE both writers use.
        wrong = con.execute(
            "select count(*) from day d join zones z using (tenant_id) "
            "where cast(timezone(z.zone, d.created) as date) <> d.local_date"
        ).fetchone()
        assert wrong == (0,), path


def test_a_tenant_without_a_zone_fails_and_leaves_the_lake_as_it_was(
    migrated_dsn: str, tmp_path: Path, charges: LakeTable
) -> None:
    layout = LakeLayout(tmp_path / "lake")
    snapshot_table(migrated_dsn, layout, charges, ZONES)
    before = {p: p.read_bytes() for p in layout.base_files("stripe_charges")}
    known = {t: z for t, z in ZONES.items() if t != 4}
    with pytest.raises(LookupError, match=r"tenants without a time zone: \[4\]"):
        snapshot_table(migrated_dsn, layout, charges, known)
    with pytest.raises(LookupError, match=r"tenants without a time zone: \[1, 2, 3, 4, 5, 6\]"):
        snapshot_table(migrated_dsn, layout, charges, {})
    assert {p: p.read_bytes() for p in layout.base_files("stripe_charges")} == before


def test_empty_tables_leave_no_day_files(migrated_dsn: str, tmp_path: Path) -> None:
    layout = LakeLayout(tmp_path / "lake")
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        add_tenants(conn, {1: "Pacific/Kiritimati"})
        plaid = load_lake_table(conn, PLAID)
        charges = load_lake_table(conn, CHARGES)
    report = snapshot_table(migrated_dsn, layout, charges, {1: "Pacific/Kiritimati"})
    assert (report.rows, report.days) == (0, 0)
    # A bank-date table: its day is a column, not a zone conversion (no CASE branches).
    report = snapshot_table(migrated_dsn, layout, plaid, {1: "Pacific/Kiritimati"})
    assert (report.rows, report.days) == (0, 0)
    assert layout.base_files("stripe_charges") == layout.base_files("plaid_transactions") == []
