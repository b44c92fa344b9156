"""The inbox: each event once, applied by source time whatever the arrival order."""

from typing import Any

import psycopg
import pytest

from ledger_assets.lib.ingest.inbox import apply_stripe_events, land
from ledger_assets.lib.ingest.stripe_pull import stripe_event_for_inbox
from tests.ingest import factories as f


@pytest.fixture
def conn(migrated_dsn: str) -> Any:
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        f.tenant(conn)
        yield conn


def event(eid: str, etype: str, obj: dict[str, Any], created: int) -> dict[str, Any]:
    return {"id": eid, "object": "event", "type": etype, "created": created,
            "account": "acct_1", "data": {"object": obj}}  # fmt: skip


def deliver(conn: Any, *events: dict[str, Any], tenant_id: int | None = 1) -> list[bool]:
    with conn.transaction():
        return [land(conn, stripe_event_for_inbox(e, tenant_id)) for e in events]


def test_duplicate_delivery_is_landed_once(conn: Any) -> None:
    created = event("evt_1", "charge.succeeded", f.charge(), f.T0)
    assert deliver(conn, created, created) == [True, False]
    assert deliver(conn, created) == [False]
    report = apply_stripe_events(conn)
    assert report.applied == 1
    assert apply_stripe_events(conn).applied == 0  # nothing left to apply
    assert conn.execute("select count(*) from ledger.stripe_charges").fetchone() == (1,)


def test_out_of_order_deliveries_end_in_the_latest_state(conn: Any) -> None:
    t = f.T0 + 100 * 86400
    deliver(conn, event("evt_c", "charge.succeeded", f.charge(), f.T0))
    apply_stripe_events(conn)
    opened = event("evt_d1", "charge.dispute.created", f.dispute(status="needs_response"), t)
    review = event("evt_d2", "charge.dispute.updated", f.dispute(status="under_review"), t + 60)
    won = event("evt_d3", "charge.dispute.closed", f.dispute(status="won"), t + 7200)
    # Arrival order: closed first, then the opening, then the middle one in a later batch.
    deliver(conn, won, opened)
    apply_stripe_events(conn)
    deliver(conn, review)
    apply_stripe_events(conn)
    status = conn.execute("select status from ledger.stripe_disputes").fetchone()
    assert status == ("won",)
    applied = conn.execute(
        "select count(*) from ledger.webhook_inbox where status = 'applied'"
    ).fetchone()
    assert applied == (4,)


def test_event_of_unknown_account_is_quarantined_not_lost(conn: Any) -> None:
    deliver(conn, event("evt_x", "charge.succeeded", f.charge("ch_x"), f.T0), tenant_id=None)
    report = apply_stripe_events(conn)
    assert report.quarantined == 1
    row = conn.execute("select reason, payload->>'id' from ledger.quarantine").fetchone()
    assert row == ("event for unknown Stripe account 'acct_1'", "evt_x")
    assert conn.execute("select status from ledger.webhook_inbox").fetchone() == ("quarantined",)


def test_dispute_event_before_its_charge_is_released_when_the_charge_lands(conn: Any) -> None:
    deliver(conn, event("evt_d", "charge.dispute.created", f.dispute(), f.T0 + 86400 * 120))
    assert apply_stripe_events(conn).quarantined == 1
    assert conn.execute("select count(*) from ledger.stripe_disputes").fetchone() == (0,)
    deliver(conn, event("evt_c", "charge.succeeded", f.charge(), f.T0))
    report = apply_stripe_events(conn)
    assert report.writes.released == 1
    assert conn.execute("select status from ledger.stripe_disputes").fetchone() == (
        "needs_response",
    )


def test_events_for_objects_we_do_not_keep_are_ignored(conn: Any) -> None:
    deliver(conn, event("evt_s", "customer.created", {"id": "cus_1", "object": "customer"}, f.T0))
    assert apply_stripe_events(conn).ignored == 1
    assert conn.execute("select status from ledger.webhook_inbox").fetchone() == ("ignored",)
