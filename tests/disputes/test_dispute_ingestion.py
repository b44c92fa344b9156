"""Disputes in the system of record: once, in the right final state, with their charge marked."""

from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from ledger_assets.lib.ingest.inbox import InboxEvent, apply_stripe_events, land
from ledger_assets.lib.ingest.stripe_records import validate_objects
from ledger_assets.lib.ingest.stripe_writer import write_stripe_rows
from tests.ingest import factories as f

DISPUTE_AT = f.T0 + 120 * 86400


def event(eid: str, kind: str, obj: dict[str, Any], created: int) -> InboxEvent:
    payload = {"id": eid, "object": "event", "type": kind, "created": created,
               "account": "acct_1", "data": {"object": obj}}  # fmt: skip
    return InboxEvent("stripe", eid, kind, datetime.fromtimestamp(created, UTC), payload, 1)


def deliver(dsn: str, *events: InboxEvent) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for e in events:
            land(conn, e)
        apply_stripe_events(conn)


def state(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        disputes = conn.execute(
            "select id, status, balance_transactions from ledger.stripe_disputes order by id"
        ).fetchall()
        charge = conn.execute(
            "select disputed, source_ts from ledger.stripe_charges where id = 'ch_1'"
        ).fetchone()
        bts = conn.execute(
            "select id, amount from ledger.stripe_balance_transactions "
            "where reporting_category like 'dispute%%' order by id"
        ).fetchall()
    return {"disputes": disputes, "charge": charge, "bts": bts}


@pytest.fixture
def dsn(migrated_dsn: str) -> str:
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        f.tenant(conn)
        # The charge is old (T0): the dispute arrives 120 days later.
        write_stripe_rows(
            conn,
            validate_objects([f.charge()], 1, datetime.fromtimestamp(f.T0, UTC)),
            1,
            {"ch_1": f.charge()},
        )
    return migrated_dsn


def story(did: str = "dp_1") -> list[InboxEvent]:
    """A won dispute: opened (funds withdrawn), under review, then funds reinstated and won."""
    opened = f.dispute(did, created=DISPUTE_AT)
    reinstated = f.balance_transaction(
        f"txn_{did}_r", 1000, 0, DISPUTE_AT + 9 * 86400, type="adjustment",
        reporting_category="dispute_reversal", source=did,
    )  # fmt: skip
    won = opened | {"status": "won", "balance_transactions": [*opened["balance_transactions"],
                                                              reinstated]}  # fmt: skip
    return [
        event(f"evt_{did}_1", "charge.dispute.created", opened, DISPUTE_AT),
        event(f"evt_{did}_2", "charge.dispute.funds_withdrawn", opened, DISPUTE_AT + 1),
        event(f"evt_{did}_3", "charge.dispute.updated", opened | {"status": "under_review"},
              DISPUTE_AT + 3 * 86400),
        event(f"evt_{did}_4", "charge.dispute.funds_reinstated", won, DISPUTE_AT + 9 * 86400),
        event(f"evt_{did}_5", "charge.dispute.closed", won, DISPUTE_AT + 9 * 86400 + 1),
    ]  # fmt: skip


FINAL = {
    "disputes": [("dp_1", "won", ["txn_dp_1_w", "txn_dp_1_r"])],
    "bts": [("txn_dp_1_r", 1000), ("txn_dp_1_w", -1000)],
}


def test_a_dispute_marks_its_charge_disputed_in_the_same_transaction(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        report = write_stripe_rows(
            conn,
            validate_objects([f.dispute(created=DISPUTE_AT)], 1,
                             datetime.fromtimestamp(DISPUTE_AT, UTC)),
            1, {"dp_1": f.dispute(created=DISPUTE_AT)},
        )  # fmt: skip
        assert report.merged["stripe_disputes"].inserted == 1
        conn.rollback()  # nothing of it stays: the charge flag belongs to the transaction
    assert state(dsn)["charge"][0] is False
    deliver(dsn, story()[0])
    disputed, source_ts = state(dsn)["charge"]
    assert disputed is True
    # A charge snapshot older than the dispute can no longer merge over the flag.
    assert source_ts == datetime.fromtimestamp(DISPUTE_AT, UTC)
    with psycopg.connect(dsn, autocommit=True) as conn:
        stale = f.charge()  # disputed: false, as a pull that started before the dispute saw it
        write_stripe_rows(
            conn, validate_objects([stale], 1, datetime.fromtimestamp(DISPUTE_AT - 60, UTC)),
            1, {"ch_1": stale},
        )  # fmt: skip
    assert state(dsn)["charge"][0] is True


def test_every_state_lands_once_in_order(dsn: str) -> None:
    deliver(dsn, *story())
    assert {k: v for k, v in state(dsn).items() if k != "charge"} == FINAL
    assert state(dsn)["charge"][0] is True


def test_duplicated_and_reordered_deliveries_end_in_the_same_state(dsn: str) -> None:
    events = story()
    # The closing event first, each event twice, in two separate applies.
    deliver(dsn, events[4], events[2], events[4])
    deliver(dsn, events[0], events[3], events[1], events[0], events[2], events[1])
    with psycopg.connect(dsn) as conn:
        inbox = conn.execute(
            "select count(*), count(*) filter (where status = 'applied') from ledger.webhook_inbox"
        ).fetchone()
    assert inbox == (5, 5)
    assert {k: v for k, v in state(dsn).items() if k != "charge"} == FINAL
    assert state(dsn)["charge"][0] is True


def test_a_dispute_for_an_unknown_charge_waits_in_quarantine_until_the_charge_arrives(
    dsn: str,
) -> None:
    orphan = f.dispute("dp_9", charge_id="ch_9", created=DISPUTE_AT)
    deliver(dsn, event("evt_9", "charge.dispute.created", orphan, DISPUTE_AT))
    with psycopg.connect(dsn) as conn:
        waiting = conn.execute(
            "select entity, record_key, reason, awaiting_key, resolved_at from ledger.quarantine"
        ).fetchall()
        assert conn.execute("select count(*) from ledger.stripe_disputes").fetchone() == (0,)
    assert waiting == [("dispute", "dp_9", "unknown charge ch_9 for tenant 1", "ch_9", None)]
    # The old charge arrives later (a backfill): the dispute is written and the charge marked.
    late_charge = f.charge("ch_9", created=f.T0 - 86400)
    deliver(dsn, event("evt_ch_9", "charge.succeeded", late_charge, DISPUTE_AT + 60))
    with psycopg.connect(dsn) as conn:
        resolved = conn.execute("select resolution from ledger.quarantine").fetchone()
        row = conn.execute(
            "select d.status, c.disputed from ledger.stripe_disputes d "
            "join ledger.stripe_charges c on c.id = d.charge where d.id = 'dp_9'"
        ).fetchone()
    assert resolved == ("parent arrived; written",)
    assert row == ("needs_response", True)


def test_a_backfill_page_writes_disputes_and_marks_their_charges(dsn: str) -> None:
    # /v1/disputes pages go through the same writer, stamped with the pull's start time.
    page = [f.dispute("dp_1", created=DISPUTE_AT), f.dispute("dp_1", created=DISPUTE_AT)]
    pulled_at = datetime.fromtimestamp(DISPUTE_AT + 3600, UTC)
    with psycopg.connect(dsn) as conn, conn.transaction():
        write_stripe_rows(conn, validate_objects(page, 1, pulled_at), 1, {"dp_1": page[0]})
    # The same dispute then arrives by webhook, older than the pull: nothing changes.
    deliver(dsn, story()[0])
    result = state(dsn)
    assert result["disputes"] == [("dp_1", "needs_response", ["txn_dp_1_w"])]
    assert result["charge"] == (True, pulled_at)
