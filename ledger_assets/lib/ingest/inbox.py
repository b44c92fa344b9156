"""The webhook inbox: land every verified event once, apply in source-timestamp order.

Landing is ``INSERT ... ON CONFLICT (provider, event_key) DO NOTHING``: a duplicate delivery is
recognized and answered 200 without doing anything. Applying takes the oldest received events
first (by the provider's timestamp, not by arrival) under ``FOR UPDATE SKIP LOCKED`` so that
concurrent appliers never take the same event, and marks each event in the same transaction
that writes its effect: an event is applied exactly once or not at all.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from ledger_assets.lib.ingest.quarantine import Rejection, quarantine
from ledger_assets.lib.ingest.stripe_records import MODELS, validate_objects
from ledger_assets.lib.ingest.stripe_writer import WriteReport, write_stripe_rows


@dataclass(frozen=True)
class InboxEvent:
    provider: str
    event_key: str
    event_type: str
    source_created: datetime
    payload: dict[str, Any]
    tenant_id: int | None


def land(conn: psycopg.Connection[tuple[object, ...]], event: InboxEvent) -> bool:
    """Insert ``event`` unless its key was seen before; True if it is new."""
    row = conn.execute(
        """
        insert into ledger.webhook_inbox
            (provider, event_key, tenant_id, event_type, source_created, payload)
        values (%s, %s, %s, %s, %s, %s)
        on conflict (provider, event_key) do nothing
        returning inbox_id
        """,
        (
            event.provider, event.event_key, event.tenant_id, event.event_type,
            event.source_created, Jsonb(event.payload),
        ),
    ).fetchone()  # fmt: skip
    return row is not None


def land_plaid_webhook(
    conn: psycopg.Connection[tuple[object, ...]], content_hash: str, event: InboxEvent
) -> bool:
    """Land a Plaid webhook unless an identical one is still waiting; True if it is new.

    Plaid sends no event id, and its webhooks say "something changed for item X": a retry and
    a later, genuinely new notice can have the same body. An identical body that is still
    waiting is a duplicate; one whose predecessor was already served is a new notice, so the
    key is the body hash plus a generation number (the unique constraint settles races).
    """
    with conn.transaction():
        waiting = conn.execute(
            "select 1 from ledger.webhook_inbox where provider = 'plaid' "
            "and event_key like %s and status = 'received'",
            (f"{content_hash}:%",),
        ).fetchone()
        if waiting:
            return False
        generation = conn.execute(
            "select count(*) from ledger.webhook_inbox where provider = 'plaid' "
            "and event_key like %s",
            (f"{content_hash}:%",),
        ).fetchone()
        assert generation is not None
        keyed = InboxEvent(
            event.provider, f"{content_hash}:{generation[0]}", event.event_type,
            event.source_created, event.payload, event.tenant_id,
        )  # fmt: skip
        return land(conn, keyed)


def tenant_for_stripe_account(
    conn: psycopg.Connection[tuple[object, ...]], account: str | None
) -> int | None:
    if not account:
        return None
    row = conn.execute(
        "select tenant_id from ledger.tenants where stripe_account_id = %s", (account,)
    ).fetchone()
    return None if row is None else int(str(row[0]))


@dataclass
class ApplyReport:
    applied: int = 0
    ignored: int = 0
    quarantined: int = 0
    writes: WriteReport = field(default_factory=WriteReport)
    #: The provider timestamp of the newest event applied (for the UI).
    newest_applied: datetime | None = None


def apply_stripe_events(
    conn: psycopg.Connection[tuple[object, ...]], limit: int = 5000
) -> ApplyReport:
    """Apply up to ``limit`` received Stripe events, oldest source timestamp first.

    Events whose object type the system of record keeps are written through the same forward-
    only merge as pulls, stamped with the event's ``created``; others are marked ``ignored``. An
    event of an unknown tenant, or whose object fails validation, is marked ``quarantined``
    and its payload kept in the quarantine with the reason.
    """
    report = ApplyReport()
    with conn.transaction():
        events = conn.execute(
            """
            select inbox_id, tenant_id, event_type, source_created, payload
            from ledger.webhook_inbox
            where provider = 'stripe' and status = 'received'
            order by source_created, inbox_id
            limit %s
            for update skip locked
            """,
            (limit,),
        ).fetchall()
        outcome: dict[str, list[int]] = defaultdict(list)
        for inbox_id, tenant_id, event_type, source_created, payload in events:
            status = _apply_one(
                conn, int(str(inbox_id)), tenant_id, str(event_type), source_created, payload,
                report,
            )  # fmt: skip
            outcome[status].append(int(str(inbox_id)))
            if status == "applied":
                assert isinstance(source_created, datetime)
                report.newest_applied = source_created
        for status, ids in outcome.items():
            conn.execute(
                "update ledger.webhook_inbox set status = %s, attempts = attempts + 1, "
                "applied_at = now() where inbox_id = any(%s)",
                (status, ids),
            )
    return report


def _apply_one(
    conn: psycopg.Connection[tuple[object, ...]],
    inbox_id: int,
    tenant_id: object,
    event_type: str,
    source_created: object,
    payload: Any,
    report: ApplyReport,
) -> str:
    obj = payload.get("data", {}).get("object", {})
    if obj.get("object") not in MODELS:
        report.ignored += 1
        return "ignored"
    if tenant_id is None:
        report.quarantined += quarantine(
            conn,
            [Rejection("stripe", "event", payload.get("id"),
                       f"event for unknown Stripe account {payload.get('account')!r}", payload)],
        )  # fmt: skip
        return "quarantined"
    assert isinstance(source_created, datetime)
    tenant = int(str(tenant_id))
    rows = validate_objects([obj], tenant, source_created)
    if rows.rejected:
        report.quarantined += quarantine(conn, rows.rejected)
        return "quarantined"
    written = write_stripe_rows(conn, rows, tenant, {obj["id"]: obj})
    report.writes.absorb(written)
    if written.quarantined:
        # Set aside until its parent arrives (see stripe_writer); the quarantine row has it.
        report.quarantined += 1
        return "quarantined"
    report.applied += 1
    return "applied"


def pending_plaid_items(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, int]:
    """Items with received (not yet synced) Plaid webhooks → the newest inbox id for each."""
    rows = conn.execute(
        """
        select payload->>'item_id', max(inbox_id) from ledger.webhook_inbox
        where provider = 'plaid' and status = 'received' and payload ? 'item_id'
        group by 1
        """
    ).fetchall()
    return {str(item): int(str(newest)) for item, newest in rows}


def mark_plaid_webhooks_synced(
    conn: psycopg.Connection[tuple[object, ...]], item_id: str, up_to_inbox_id: int
) -> int:
    """After a sync that started once they had landed, the item's webhooks are served."""
    return conn.execute(
        """
        update ledger.webhook_inbox
        set status = 'applied', applied_at = now(), attempts = attempts + 1
        where provider = 'plaid' and status = 'received' and payload->>'item_id' = %s
          and inbox_id <= %s
        """,
        (item_id, up_to_inbox_id),
    ).rowcount


def newest_received(conn: psycopg.Connection[tuple[object, ...]], provider: str) -> str | None:
    """A key naming the newest inbox row still waiting for ``provider`` (a sensor's run key).

    It holds the row's id and arrival time, so that it stays unique even if the database is
    rebuilt and ids start again.
    """
    row = conn.execute(
        "select inbox_id, (extract(epoch from received_at) * 1000)::bigint "
        "from ledger.webhook_inbox where provider = %s and status = 'received' "
        "order by inbox_id desc limit 1",
        (provider,),
    ).fetchone()
    return None if row is None else f"{row[0]}-{row[1]}"
