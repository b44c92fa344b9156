"""The lake: snapshot into day files, CDC batches rewrite exactly the touched partitions."""

import hashlib
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pytest

from ledger_assets.lib.lake.apply import (
    OldRowUnavailableError,
    TruncateNotAppliedError,
    UnknownTenantZoneError,
    apply_changes,
)
from ledger_assets.lib.lake.compact import compact
from ledger_assets.lib.lake.layout import LakeLayout, PartitionKey
from ledger_assets.lib.lake.reader import create_lake_view
from ledger_assets.lib.lake.schema import LakeTable, load_lake_table
from ledger_assets.lib.lake.snapshot import snapshot_table
from ledger_assets.lib.sor.catalog import MIRRORED_TABLES

CHARGES = next(t for t in MIRRORED_TABLES if t.name == "stripe_charges")
ZONES = {1: "America/New_York", 2: "Pacific/Auckland"}


def charge_row(cid: str, tenant: int, created: datetime, amount: int = 1000) -> dict[str, Any]:
    return {
        "id": cid, "tenant_id": tenant, "amount": amount, "amount_captured": amount,
        "amount_refunded": 0, "currency": "usd", "status": "succeeded", "paid": True,
        "captured": True, "refunded": False, "disputed": False, "balance_transaction": None,
        "payment_intent": None, "customer": None, "description": None, "metadata": "{}",
        "livemode": False, "created": created, "ingested_at": created, "source_ts": created,
    }  # fmt: skip


@pytest.fixture
def world(migrated_dsn: str, tmp_path: Path) -> tuple[str, LakeLayout, LakeTable]:
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        for tenant, zone in ZONES.items():
            conn.execute(
                "insert into ledger.tenants (tenant_id, name, time_zone, default_currency, "
                "stripe_account_id) values (%s, 'x', %s, 'usd', %s)",
                (tenant, zone, f"acct_{tenant}"),
            )
        # 2024-03-10 is New York's 23-hour DST day; 04:30Z is still March 9 there.
        instants = [
            ("ch_a", 1, datetime(2024, 3, 10, 4, 30, tzinfo=UTC)),
            ("ch_b", 1, datetime(2024, 3, 10, 5, 30, tzinfo=UTC)),
            ("ch_c", 1, datetime(2024, 3, 11, 3, 59, tzinfo=UTC)),
            ("ch_d", 2, datetime(2024, 3, 10, 10, 0, tzinfo=UTC)),  # Auckland: March 10, 23:00
            ("ch_e", 2, datetime(2024, 3, 10, 11, 30, tzinfo=UTC)),  # Auckland: March 11
        ]
        for cid, tenant, created in instants:
            row = charge_row(cid, tenant, created)
            conn.execute(
                "insert into ledger.stripe_charges (id, tenant_id, amount, amount_captured, "
                "amount_refunded, currency, status, paid, captured, refunded, disputed, created, "
                "metadata) values (%s, %s, %s, %s, 0, 'usd', 'succeeded', true, true, false, "
                'false, %s, \'{"big": "value"}\')',
                (cid, tenant, row["amount"], row["amount"], created),
            )
        lake_table = load_lake_table(conn, CHARGES)
    layout = LakeLayout(tmp_path / "lake")
    snapshot_table(migrated_dsn, layout, lake_table, ZONES)
    return migrated_dsn, layout, lake_table


def lake_counts(layout: LakeLayout, lake_table: LakeTable) -> dict[tuple[int, date], int]:
    con = duckdb.connect()
    create_lake_view(con, layout, lake_table)
    rows = con.execute(
        "select tenant_id, local_date, count(*) from stripe_charges group by all"
    ).fetchall()
    return {(t, d): n for t, d, n in rows}


def postgres_counts(dsn: str) -> dict[tuple[int, date], int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "select c.tenant_id, (c.created at time zone t.time_zone)::date, count(*) "
            "from ledger.stripe_charges c join ledger.tenants t using (tenant_id) group by 1, 2"
        ).fetchall()
    return {(t, d): n for t, d, n in rows}


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*.parquet")
    }


def changes(
    lake_table: LakeTable, *items: tuple[str, dict[str, Any] | None, dict[str, Any] | None]
) -> pa.Table:
    struct = pa.struct(list(lake_table.source))
    ops, keys, new, old = [], [], [], []
    for op, after, before in items:
        ops.append(op)
        keys.append((after or before or {}).get("id"))
        new.append(after)
        old.append(before)
    n = len(items)
    return pa.table(
        {
            "commit_lsn": pa.array(range(100, 100 + n), pa.uint64()),
            "seq": pa.array([0] * n, pa.uint32()),
            "lsn": pa.array(range(100, 100 + n), pa.uint64()),
            "op": pa.array(ops, pa.string()),
            "key": pa.array(keys, pa.string()),
            "old_kind": pa.array(["full" if o else None for o in old], pa.string()),
            "new": pa.array(new, struct),
            "old": pa.array(old, struct),
        }
    )


def test_snapshot_files_rows_under_each_tenants_local_day(world: Any) -> None:
    dsn, layout, lake_table = world
    assert lake_counts(layout, lake_table) == postgres_counts(dsn)
    assert lake_counts(layout, lake_table) == {
        (1, date(2024, 3, 9)): 1, (1, date(2024, 3, 10)): 2,
        (2, date(2024, 3, 10)): 1, (2, date(2024, 3, 11)): 1,
    }  # fmt: skip
    assert [p.parent.name for p in layout.base_files("stripe_charges")] == [
        "local_date=2024-03-09", "local_date=2024-03-10", "local_date=2024-03-11",
    ]  # fmt: skip


def test_batch_rewrites_only_touched_partitions(world: Any) -> None:
    _, layout, lake_table = world
    before = file_hashes(layout.root)
    moved_from = charge_row("ch_b", 1, datetime(2024, 3, 10, 5, 30, tzinfo=UTC))
    moved_to = charge_row("ch_b", 1, datetime(2024, 3, 12, 15, 0, tzinfo=UTC), amount=1200)
    batch = changes(
        lake_table,
        ("insert", charge_row("ch_new", 2, datetime(2024, 3, 10, 10, 30, tzinfo=UTC)), None),
        ("update", moved_to, moved_from),
    )
    writes = apply_changes(layout, lake_table, ZONES, batch)
    assert sorted((w.key.tenant_id, w.key.local_date, w.rows) for w in writes) == [
        (1, date(2024, 3, 10), 1), (1, date(2024, 3, 12), 1), (2, date(2024, 3, 10), 2),
    ]  # fmt: skip
    after = file_hashes(layout.root)
    assert {k: v for k, v in after.items() if k in before} == before  # base files untouched
    assert sorted(set(after) - set(before)) == [
        "stripe_charges/overlay/tenant_id=1/local_date=2024-03-10/data.parquet",
        "stripe_charges/overlay/tenant_id=1/local_date=2024-03-12/data.parquet",
        "stripe_charges/overlay/tenant_id=2/local_date=2024-03-10/data.parquet",
    ]
    counts = lake_counts(layout, lake_table)
    assert counts[(1, date(2024, 3, 10))] == 1
    assert counts[(1, date(2024, 3, 12))] == 1
    assert counts[(2, date(2024, 3, 10))] == 2
    con = duckdb.connect()
    create_lake_view(con, layout, lake_table)
    assert con.execute("select amount, _lsn from stripe_charges where id = 'ch_b'").fetchone() == (
        1200, 101,
    )  # fmt: skip


def test_the_last_change_per_key_wins_in_any_row_order(world: Any) -> None:
    """Change order is (commit_lsn, seq), not row order; an update that changes the primary
    key removes the old key."""
    _, layout, lake_table = world
    a_at = datetime(2024, 3, 10, 4, 30, tzinfo=UTC)
    batch = changes(
        lake_table,
        ("insert", charge_row("ch_k1", 1, a_at), None),
        ("update", charge_row("ch_k2", 1, a_at, amount=5), charge_row("ch_k1", 1, a_at)),
        ("update", charge_row("ch_a", 1, a_at, amount=7), charge_row("ch_a", 1, a_at)),
        ("update", charge_row("ch_a", 1, a_at, amount=8), charge_row("ch_a", 1, a_at, amount=7)),
        ("delete", None, charge_row("ch_k2", 1, a_at, amount=5)),
        ("insert", charge_row("ch_k2", 1, a_at, amount=6), None),
    )
    apply_changes(layout, lake_table, ZONES, batch.take([5, 3, 1, 4, 0, 2]))
    con = duckdb.connect()
    create_lake_view(con, layout, lake_table)
    rows = con.execute(
        "select id, amount, _lsn from stripe_charges where local_date = '2024-03-09' order by id"
    ).fetchall()
    assert rows == [("ch_a", 8, 103), ("ch_k2", 6, 105)]


def test_reapplying_a_batch_changes_nothing(world: Any) -> None:
    _, layout, lake_table = world
    batch = changes(
        lake_table,
        ("delete", None, charge_row("ch_a", 1, datetime(2024, 3, 10, 4, 30, tzinfo=UTC))),
    )
    first = apply_changes(layout, lake_table, ZONES, batch)
    hashes = file_hashes(layout.root)
    again = apply_changes(layout, lake_table, ZONES, batch)
    assert [w.changed for w in first] == [True]
    assert [w.changed for w in again] == [False]
    assert file_hashes(layout.root) == hashes
    # The emptied partition is an explicit empty overlay, hiding the base file's row.
    assert (1, date(2024, 3, 9)) not in lake_counts(layout, lake_table)
    assert first[0].rows == 0


def test_update_with_identical_content_writes_nothing(world: Any) -> None:
    _, layout, lake_table = world
    con = duckdb.connect()
    create_lake_view(con, layout, lake_table)
    row = (
        con.execute("select * from stripe_charges where id = 'ch_d'")
        .to_arrow_table()
        .to_pylist()[0]
    )
    same = {k: row[k] for k in lake_table.source.names}
    batch = changes(lake_table, ("update", same, same))
    batch = batch.set_column(0, "commit_lsn", pa.array([0], pa.uint64()))  # the snapshot's _lsn
    assert [w.changed for w in apply_changes(layout, lake_table, ZONES, batch)] == [False]


def test_truncate_and_missing_old_rows_fail_closed(world: Any) -> None:
    _, layout, lake_table = world
    with pytest.raises(TruncateNotAppliedError, match="re-snapshot"):
        apply_changes(layout, lake_table, ZONES, changes(lake_table, ("truncate", None, None)))
    blind = changes(lake_table, ("delete", None, charge_row("ch_a", 1, datetime.now(UTC))))
    blind = blind.set_column(5, "old_kind", pa.array(["key"]))
    with pytest.raises(OldRowUnavailableError, match="REPLICA IDENTITY FULL"):
        apply_changes(layout, lake_table, ZONES, blind)
    stranger = changes(lake_table, ("insert", charge_row("ch_z", 9, datetime.now(UTC)), None))
    with pytest.raises(UnknownTenantZoneError, match=r"tenant\(s\) \[9\]"):
        apply_changes(layout, lake_table, ZONES, stranger)
    assert PartitionKey("stripe_charges", 9, date.today()) not in layout.overlay_keys(
        "stripe_charges"
    )


def test_money_and_json_types_survive_exactly(world: Any) -> None:
    _, layout, lake_table = world
    con = duckdb.connect()
    create_lake_view(con, layout, lake_table)
    kinds = dict(
        con.execute("select column_name, column_type from (describe stripe_charges)").fetchall()
    )
    assert kinds["amount"] == "BIGINT"
    assert kinds["created"] == "TIMESTAMP WITH TIME ZONE"
    assert kinds["metadata"] == "VARCHAR"
    assert con.execute("select metadata from stripe_charges where id='ch_a'").fetchone() == (
        '{"big": "value"}',
    )


def test_compaction_folds_overlays_without_changing_any_partition(world: Any) -> None:
    _, layout, lake_table = world
    batch = changes(
        lake_table,
        ("insert", charge_row("ch_n1", 1, datetime(2024, 3, 10, 12, 0, tzinfo=UTC)), None),
        ("insert", charge_row("ch_n2", 2, datetime(2024, 3, 11, 1, 0, tzinfo=UTC)), None),
        ("delete", None, charge_row("ch_a", 1, datetime(2024, 3, 10, 4, 30, tzinfo=UTC))),
    )
    apply_changes(layout, lake_table, ZONES, batch)
    before = lake_counts(layout, lake_table)
    untouched = layout.base_file("stripe_charges", date(2024, 3, 11)).read_bytes()
    report = compact(layout, lake_table, before=date(2024, 3, 11))
    assert (report.days, report.overlays_folded) == (2, 2)  # March 9 (emptied) and March 10
    assert lake_counts(layout, lake_table) == before
    assert layout.overlay_keys("stripe_charges") == [
        PartitionKey("stripe_charges", 2, date(2024, 3, 11))  # inside the hot window: kept
    ]
    assert layout.base_file("stripe_charges", date(2024, 3, 11)).read_bytes() == untouched
