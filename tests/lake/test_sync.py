"""End to end: seed the lake, capture changes, apply them; the lake equals Postgres."""

from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from ledger_assets.lib.cdc import CaptureConfig, ChangeCapture
from ledger_assets.lib.cdc import slot as slots
from ledger_assets.lib.lake.layout import LakeLayout
from ledger_assets.lib.lake.reader import create_lake_view
from ledger_assets.lib.lake.snapshot import postgres_scanner, snapshot_table
from ledger_assets.lib.lake.sync import (
    apply_landed,
    lake_tables,
    read_lake_state,
    seed_lake,
    tenant_zones,
)
from ledger_assets.lib.synth.load import SeedSpec, seed_database


@pytest.fixture
def lake(migrated_dsn: str, tmp_path: Path) -> Any:
    seed_database(migrated_dsn, SeedSpec(tenants=4, days=40, target_rows=4000))
    name = str(conninfo_to_dict(migrated_dsn)["dbname"])
    layout = LakeLayout(tmp_path / "lake")
    config = CaptureConfig(
        dsn=migrated_dsn, changelog_dir=layout.root / "_changelog",
        slot_name=f"lake_{name}", publication=f"lake_{name}",
    )  # fmt: skip
    with ChangeCapture(config) as capture:
        state = capture.start()
    seed_lake(migrated_dsn, layout, state.origin)
    yield migrated_dsn, layout, config
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        slots.drop_slot(conn, config.slot_name)


def assert_lake_equals_postgres(dsn: str, layout: LakeLayout) -> None:
    with psycopg.connect(dsn) as conn:
        tables = lake_tables(conn)
    con = postgres_scanner(dsn)
    for name, lake_table in tables.items():
        create_lake_view(con, layout, lake_table, name=f"lake_{name}")
        columns = ", ".join(
            f"cast({c} as varchar)" if str(lake_table.source.field(c).type) == "string" else c
            for c in lake_table.columns
        )
        for left, right in (
            (f"lake_{name}", f"pg.ledger.{name}"),
            (f"pg.ledger.{name}", f"lake_{name}"),
        ):
            diff = con.execute(
                f"select count(*) from (select {columns} from {left} "
                f"except all select {columns} from {right})"
            ).fetchone()
            assert diff == (0,), f"{name}: rows in {left} not in {right}"


def test_seeded_lake_equals_postgres(lake: Any) -> None:
    dsn, layout, _ = lake
    assert_lake_equals_postgres(dsn, layout)


def test_changes_reach_the_lake_through_capture_and_apply(lake: Any) -> None:
    dsn, layout, config = lake
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "update ledger.stripe_charges set amount_refunded = amount, refunded = true "
            "where id in (select id from ledger.stripe_charges order by id limit 5)"
        )
        # A row that moves to another local day and a delete.
        conn.execute(
            "update ledger.stripe_charges set created = created - interval '3 days' "
            "where id = (select max(id) from ledger.stripe_charges where status = 'failed')"
        )
        conn.execute(
            "delete from ledger.plaid_transactions where transaction_id = "
            "(select min(transaction_id) from ledger.plaid_transactions)"
        )
    with ChangeCapture(config) as capture:
        capture.start()
        capture.run(max_seconds=30)
    result = apply_landed(dsn, layout, config.changelog_dir)
    assert result.changes >= 7
    assert result.partitions_changed >= 3
    assert_lake_equals_postgres(dsn, layout)
    state = read_lake_state(layout)
    assert state.applied_end == result.end
    assert not state.seeding
    # Applying again finds nothing new.
    assert apply_landed(dsn, layout, config.changelog_dir).batches == 0


def test_snapshot_of_more_days_than_duckdb_keeps_files_open(
    migrated_dsn: str, tmp_path: Path
) -> None:
    # Regression: with >100 day partitions DuckDB wrote several files per day, and renaming
    # them all to data.parquet silently kept only the last (37% of rows lost at 2M rows).
    seed_database(migrated_dsn, SeedSpec(tenants=2, days=300, target_rows=6000))
    layout = LakeLayout(tmp_path / "lake")
    with psycopg.connect(migrated_dsn) as conn:
        charges = lake_tables(conn)["stripe_charges"]
        zones = tenant_zones(conn)
        expected = conn.execute("select count(*) from ledger.stripe_charges").fetchone()
    report = snapshot_table(migrated_dsn, layout, charges, zones)
    con = postgres_scanner(migrated_dsn)
    create_lake_view(con, layout, charges)
    assert con.execute("select count(*) from stripe_charges").fetchone() == expected
    assert report.rows == expected[0]  # type: ignore[index]
    assert report.days > 100
