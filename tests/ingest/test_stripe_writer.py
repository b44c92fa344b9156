"""Validated Stripe objects into Postgres: merges only move forward, orphans wait."""

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from ledger_assets.lib.ingest.stripe_records import validate_objects
from ledger_assets.lib.ingest.stripe_writer import WriteReport, write_stripe_rows
from tests.ingest import factories as f

NOW = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.fixture
def conn(migrated_dsn: str) -> Any:
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        f.tenant(conn)
        yield conn


def write(conn: Any, objects: list[dict[str, Any]], at: datetime = NOW) -> WriteReport:
    with conn.transaction():
        rows = validate_objects(objects, 1, at)
        return write_stripe_rows(conn, rows, 1, {o["id"]: o for o in objects})


def one(conn: Any, query: str, *params: Any) -> Any:
    row = conn.execute(query, params).fetchone()
    return row[0] if row and len(row) == 1 else row


def test_write_is_idempotent(conn: Any) -> None:
    objects = [f.charge(), f.balance_transaction("txn_ch_1", 1000, 59, source="ch_1")]
    first = write(conn, objects)
    again = write(conn, objects)
    assert first.written == 2
    assert again.written == 0
    assert again.merged["stripe_charges"].unchanged == 1
    assert one(conn, "select count(*) from ledger.stripe_charges") == 1
    fee_details = one(conn, "select fee_details from ledger.stripe_balance_transactions")
    assert fee_details[0]["amount"] == 59


def test_older_snapshot_never_undoes_a_newer_one(conn: Any) -> None:
    write(conn, [f.charge()])
    write(conn, [f.dispute(status="under_review")], at=NOW)
    write(conn, [f.dispute(status="needs_response")], at=NOW - timedelta(hours=1))  # late
    assert one(conn, "select status from ledger.stripe_disputes") == "under_review"
    write(conn, [f.dispute(status="won")], at=NOW + timedelta(days=30))
    assert one(conn, "select status from ledger.stripe_disputes") == "won"


def test_same_second_snapshots_order_by_lifecycle(conn: Any) -> None:
    write(conn, [f.charge()])
    write(conn, [f.dispute(status="lost")], at=NOW)
    write(conn, [f.dispute(status="under_review")], at=NOW)
    assert one(conn, "select status from ledger.stripe_disputes") == "lost"


def test_duplicates_within_one_batch_keep_the_most_advanced(conn: Any) -> None:
    write(conn, [f.charge()])
    report = write(conn, [f.dispute(status="won"), f.dispute(status="needs_response")])
    assert report.merged["stripe_disputes"].inserted == 1
    assert one(conn, "select status from ledger.stripe_disputes") == "won"


def test_dispute_before_its_charge_waits_in_quarantine_then_lands(conn: Any) -> None:
    early = write(conn, [f.dispute()])
    assert early.quarantined == 1
    assert one(conn, "select count(*) from ledger.stripe_disputes") == 0
    reason, awaiting = one(
        conn, "select reason, awaiting_key from ledger.quarantine where record_key = 'dp_1'"
    )
    assert (reason, awaiting) == ("unknown charge ch_1 for tenant 1", "ch_1")
    # The dispute's withdrawal transaction is money: it lands even while the dispute waits.
    assert one(conn, "select count(*) from ledger.stripe_balance_transactions") == 1
    later = write(conn, [f.charge()], at=NOW + timedelta(minutes=5))
    assert later.released == 1
    assert one(conn, "select status from ledger.stripe_disputes") == "needs_response"
    assert one(conn, "select source_ts from ledger.stripe_disputes") == NOW  # its own age
    assert one(conn, "select count(*) from ledger.quarantine where resolved_at is null") == 0


def test_malformed_objects_are_quarantined_and_the_rest_lands(conn: Any) -> None:
    objects = [
        f.charge("ch_ok"),
        f.charge("ch_float", amount=10.5),
        f.charge("ch_cur", currency="xyz"),
        f.charge("ch_time", created="yesterday"),
        {"id": "sub_1", "object": "subscription"},
    ]
    report = write(conn, objects)
    assert report.written == 1
    assert report.quarantined == 4
    reasons = dict(conn.execute("select record_key, reason from ledger.quarantine").fetchall())
    assert "amount" in reasons["ch_float"]
    assert "unknown currency 'xyz'" in reasons["ch_cur"]
    assert "created" in reasons["ch_time"]
    assert "unsupported Stripe object type 'subscription'" in reasons["sub_1"]
    write(conn, objects)  # the same bad records again: counted, not duplicated
    assert one(conn, "select count(*), max(attempts) from ledger.quarantine") == (4, 2)


def test_refund_of_another_tenants_charge_is_an_orphan(conn: Any) -> None:
    f.tenant(conn, 2)
    with conn.transaction():
        write_stripe_rows(conn, validate_objects([f.charge("ch_t2")], 2, NOW), 2,
                          {"ch_t2": f.charge("ch_t2")})  # fmt: skip
    report = write(conn, [f.refund(charge_id="ch_t2")])
    assert report.quarantined == 1
    assert one(conn, "select count(*) from ledger.stripe_refunds") == 0
