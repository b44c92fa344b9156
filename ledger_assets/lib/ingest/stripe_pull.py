"""Incremental Stripe pulls through the real SDK, with stored cursors and an overlap window.

Each (account, stream) has a cursor in ``ledger.ingestion_cursors``: the newest ``created`` of
a completed pull. A pull asks for ``created >= cursor - overlap`` and walks the list newest
first. Objects created *during* the walk land at the head of the list, behind the walk, so the
next pull's overlap picks them up; the forward-only merge makes re-reading harmless.

Speed: the SDK's object model converts ~4,000 objects/s here, so pages are read with
``StripeClient.raw_request`` (the SDK's auth, API version and retries, but plain JSON) and
validated straight into rows. Memory is bounded by ``batch_size``: pages are merged into
Postgres every few thousand objects, each batch in its own transaction, and the cursor moves
only when the whole window has been read. A crash mid-window leaves merged batches (harmless
to re-read) and the old cursor, so the next run repeats the window and completes it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
import requests
import stripe
from stripe._base_address import BaseAddresses

from ledger_assets.lib.ingest.inbox import InboxEvent, land
from ledger_assets.lib.ingest.stripe_records import StripeRows, validate_objects
from ledger_assets.lib.ingest.stripe_writer import WriteReport, write_stripe_rows

#: Object streams pulled by list endpoint, in parent-first order. Disputes and balance
#: transactions have their own endpoints because the Events API only reaches back 30 days.
OBJECT_STREAMS: tuple[str, ...] = (
    "charges", "balance_transactions", "payouts", "refunds", "disputes",
)  # fmt: skip
EVENTS_STREAM = "events"
#: Stripe keeps events this long ("List events, going back up to 30 days").
EVENTS_RETENTION_S = 30 * 86_400
#: How far back payouts get their balance transactions linked on each run. The link costs one
#: API call per payout (Stripe's ``payout=`` filter), which is fine for the payouts still
#: settling but not for years of daily payouts: a 1,000-tenant, 3-year backfill would be 1.1M
#: calls. Older links belong to Stripe's itemized payout-reconciliation report (not built yet).
PAYOUT_LINK_WINDOW_DAYS = 35
#: Re-read this far behind the cursor: covers objects created while the previous walk ran and
#: Stripe's 1-second `created` resolution.
DEFAULT_OVERLAP_S = 15 * 60
PAGE_LIMIT = 100  # Stripe's maximum


@dataclass(frozen=True)
class StripeAccount:
    tenant_id: int
    account_id: str


@dataclass
class PullReport:
    stream: str
    account: str
    fetched: int = 0
    pages: int = 0
    writes: WriteReport = field(default_factory=WriteReport)
    events_landed: int = 0
    #: Balance transactions newly linked to the payout that swept them.
    payout_links: int = 0
    cursor_before: int | None = None
    cursor_after: int | None = None
    seconds: float = 0.0


def make_client(
    api_key: str,
    api_base: str | None = None,
    max_network_retries: int = 3,
    timeout_s: float = 30.0,
) -> stripe.StripeClient:
    """A client with explicit retries and timeouts.

    ``StripeClient`` does not retry by default (one attempt on a 500) and waits 80 s for a
    response; a pull should retry transient failures (429 with Stripe-Should-Retry, 5xx,
    timeouts) with back-off, and give up on a stuck connection well before a schedule tick.
    """
    base: BaseAddresses = {"api": api_base} if api_base else {}
    session = requests.Session()
    # Proxy settings come from the client's configuration, not from the environment: reading
    # the environment on every request cost 0.5 ms per page (a quarter of a page's client time).
    session.trust_env = False
    return stripe.StripeClient(
        api_key,
        base_addresses=base,
        max_network_retries=max_network_retries,
        http_client=stripe.RequestsClient(timeout=(5.0, timeout_s), session=session),
    )


def read_cursor(
    conn: psycopg.Connection[tuple[object, ...]], stream: str, account: str
) -> int | None:
    row = conn.execute(
        "select cursor_value from ledger.ingestion_cursors "
        "where provider = 'stripe' and stream = %s and scope = %s",
        (stream, account),
    ).fetchone()
    return None if row is None else int(str(row[0]))


def read_cursors(conn: psycopg.Connection[tuple[object, ...]], account: str) -> dict[str, int]:
    """Every stream's cursor of one account, in one query."""
    rows = conn.execute(
        "select stream, cursor_value from ledger.ingestion_cursors "
        "where provider = 'stripe' and scope = %s",
        (account,),
    ).fetchall()
    return {str(stream): int(str(value)) for stream, value in rows}


def write_cursor(
    conn: psycopg.Connection[tuple[object, ...]], stream: str, account: StripeAccount, value: int
) -> None:
    conn.execute(
        """
        insert into ledger.ingestion_cursors (provider, stream, scope, tenant_id, cursor_value)
        values ('stripe', %s, %s, %s, %s)
        on conflict (provider, stream, scope) do update
            set cursor_value = excluded.cursor_value, updated_at = now()
            where ledger.ingestion_cursors.cursor_value::bigint < excluded.cursor_value::bigint
        """,
        (stream, account.account_id, account.tenant_id, str(value)),
    )


def iter_pages(
    client: stripe.StripeClient, stream: str, account: str, created_gte: int | None
) -> Iterator[list[dict[str, Any]]]:
    """Pages of raw objects, newest first, until the list is exhausted."""
    params: dict[str, Any] = {"limit": PAGE_LIMIT, "stripe_account": account}
    if created_gte is not None:
        params["created"] = {"gte": created_gte}
    while True:
        response = client.raw_request("get", f"/v1/{stream}", **params)
        body = response.data
        data: list[dict[str, Any]] = body["data"]
        if data:
            yield data
        if not body.get("has_more") or not data:
            return
        params["starting_after"] = data[-1]["id"]


def pull_stream(
    conn: psycopg.Connection[tuple[object, ...]],
    client: stripe.StripeClient,
    account: StripeAccount,
    stream: str,
    overlap_s: int = DEFAULT_OVERLAP_S,
    batch_size: int = 5000,
    cursors: Mapping[str, int] | None = None,
) -> PullReport:
    """Pull one stream of one account into the system of record (or, for events, the inbox).

    Payout links are a separate step (:func:`link_payout_transactions`): they cost one call
    per payout rather than one per hundred objects.

    Args:
        conn: an autocommit connection; each batch commits on its own.
        client: a configured Stripe client.
        account: the tenant and its Stripe account.
        stream: one of ``OBJECT_STREAMS`` or ``EVENTS_STREAM``.
        overlap_s: how far behind the stored cursor to start.
        batch_size: objects merged per transaction (the memory bound).
        cursors: the account's cursors by stream, when the caller read them already
            (:func:`read_cursors`); saves a round trip per stream.
    """
    started = time.monotonic()
    report = PullReport(stream, account.account_id)
    report.cursor_before = (
        cursors.get(stream)
        if cursors is not None
        else read_cursor(conn, stream, account.account_id)
    )
    since = None if report.cursor_before is None else report.cursor_before - overlap_s
    # Snapshots from this pull are stamped with its start time (see migration 0003).
    source_ts = datetime.now(tz=UTC)
    newest = report.cursor_before or 0
    pending: list[dict[str, Any]] = []
    for page in iter_pages(client, stream, account.account_id, since):
        report.pages += 1
        report.fetched += len(page)
        newest = max(newest, max(int(o.get("created", 0)) for o in page))
        pending.extend(page)
        if len(pending) >= batch_size:
            _flush(conn, stream, account, pending, source_ts, report)
            pending = []
    _flush(conn, stream, account, pending, source_ts, report)
    # An unchanged cursor is not written again: a quiet account costs one read, one request.
    if report.fetched and newest != report.cursor_before:
        with conn.transaction():
            write_cursor(conn, stream, account, newest)
    report.cursor_after = newest if report.fetched else report.cursor_before
    report.seconds = time.monotonic() - started
    return report


def _flush(
    conn: psycopg.Connection[tuple[object, ...]],
    stream: str,
    account: StripeAccount,
    objects: list[dict[str, Any]],
    source_ts: datetime,
    report: PullReport,
) -> None:
    if not objects:
        return
    with conn.transaction():
        if stream == EVENTS_STREAM:
            for event in objects:
                report.events_landed += land(conn, stripe_event_for_inbox(event, account.tenant_id))
            return
        rows = validate_objects(objects, account.tenant_id, source_ts, StripeRows())
        report.writes.absorb(
            write_stripe_rows(conn, rows, account.tenant_id, {o["id"]: o for o in objects})
        )


def stripe_event_for_inbox(event: dict[str, Any], tenant_id: int | None) -> InboxEvent:
    return InboxEvent(
        provider="stripe",
        event_key=str(event["id"]),
        event_type=str(event["type"]),
        source_created=datetime.fromtimestamp(int(event["created"]), tz=UTC),
        payload=event,
        tenant_id=tenant_id,
    )


def link_payout_transactions(
    conn: psycopg.Connection[tuple[object, ...]],
    client: stripe.StripeClient,
    account: StripeAccount,
    window_days: int | None = PAYOUT_LINK_WINDOW_DAYS,
) -> int:
    """Record which balance transactions each automatic payout swept.

    Stripe's BalanceTransaction has no payout field; the link is the list endpoint's
    ``payout=`` filter, which works from the moment an automatic payout is created. Only
    payouts with no linked transaction yet are asked, so a re-run costs one query.
    """
    unlinked = [
        str(r[0])
        for r in conn.execute(
            """
            select p.id from ledger.stripe_payouts p
            where p.tenant_id = %s and p.automatic
              and p.status in ('paid', 'pending', 'in_transit')
              and (%s::int is null or p.created > now() - make_interval(days => %s::int))
              and not exists (
                  select 1 from ledger.stripe_balance_transactions b where b.payout = p.id)
            """,
            (account.tenant_id, window_days, window_days),
        ).fetchall()
    ]
    payouts: list[str] = []
    transactions: list[str] = []
    for payout in unlinked:
        params: dict[str, Any] = {
            "limit": PAGE_LIMIT, "payout": payout, "stripe_account": account.account_id,
        }  # fmt: skip
        while True:
            body = client.raw_request("get", "/v1/balance_transactions", **params).data
            for obj in body["data"]:
                if obj.get("type") != "payout":
                    payouts.append(payout)
                    transactions.append(obj["id"])
            if not body.get("has_more") or not body["data"]:
                break
            params["starting_after"] = body["data"][-1]["id"]
    # One statement for all links: a transaction per payout cost more than the API calls.
    with conn.transaction():
        linked = conn.execute(
            """
            update ledger.stripe_balance_transactions b set payout = l.payout
            from unnest(%s::text[], %s::text[]) as l(payout, id)
            where b.id = l.id and b.tenant_id = %s and b.payout is distinct from l.payout
            """,
            (payouts, transactions, account.tenant_id),
        ).rowcount
    return linked


@dataclass
class BackfillReport:
    accounts: int = 0
    fetched: int = 0
    written: int = 0
    quarantined: int = 0
    seconds: float = 0.0

    @property
    def objects_per_second(self) -> float:
        return self.fetched / self.seconds if self.seconds else 0.0


#: The pseudo-stream whose cursor is the start time of the account's last complete pull.
CHECKED_STREAM = "account_checked"


def pull_account(
    conn: psycopg.Connection[tuple[object, ...]],
    client: stripe.StripeClient,
    account: StripeAccount,
    streams: tuple[str, ...] = OBJECT_STREAMS,
    overlap_s: int = DEFAULT_OVERLAP_S,
) -> list[PullReport]:
    """Pull one account: its events first, then its object streams unless nothing happened.

    Stripe records an event for every object it creates or changes (charge, refund, dispute,
    payout, balance) and keeps events 30 days. So if the account was pulled completely less
    than 30 days ago and the events read lands no event it had not seen, no list can hold
    anything new: the object streams are skipped, and a quiet account costs one request, not
    six. (The events read still covers everything since its own cursor, so the skip never
    hides an event.) First pulls, and accounts last pulled too long ago, list everything.
    """
    started = int(time.time())
    cursors = read_cursors(conn, account.account_id)
    events = pull_stream(conn, client, account, EVENTS_STREAM, overlap_s, cursors=cursors)
    reports = [events]
    checked = cursors.get(CHECKED_STREAM)
    quiet = (
        checked is not None
        and started - checked < EVENTS_RETENTION_S - overlap_s
        and events.events_landed == 0
        and all(stream in cursors for stream in streams)
    )
    if not quiet:
        for stream in streams:
            reports.append(pull_stream(conn, client, account, stream, overlap_s, cursors=cursors))
    with conn.transaction():
        write_cursor(conn, CHECKED_STREAM, account, started)
    return reports


def _pull_some(
    dsn: str,
    api_key: str,
    api_base: str | None,
    accounts: list[StripeAccount],
    streams: tuple[str, ...],
    overlap_s: int,
) -> BackfillReport:
    """One worker: its own client and connection, its share of the accounts, in order."""
    report = BackfillReport(accounts=len(accounts))
    client = make_client(api_key, api_base)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for account in accounts:
            for pulled in pull_account(conn, client, account, streams, overlap_s):
                if pulled.stream != EVENTS_STREAM:
                    report.fetched += pulled.fetched
                report.written += pulled.writes.written
                report.quarantined += pulled.writes.quarantined
    return report


def pull_accounts(
    dsn: str,
    api_key: str,
    api_base: str | None,
    accounts: list[StripeAccount],
    streams: tuple[str, ...] = OBJECT_STREAMS,
    workers: int = 2,
    overlap_s: int = DEFAULT_OVERLAP_S,
) -> BackfillReport:
    """Pull ``streams`` of many accounts with ``workers`` processes.

    Processes, not threads: a page costs ~2 ms of client CPU (JSON decoding in the SDK,
    validation, COPY encoding) under the GIL, so threads stall on each other; two processes
    keep both cores busy while each waits on HTTP or Postgres. Accounts are dealt round-robin
    so that big and small tenants spread evenly.
    """
    started = time.monotonic()
    shares = [accounts[i :: max(1, workers)] for i in range(max(1, workers))]
    total = BackfillReport(accounts=len(accounts))
    if workers <= 1:
        parts = [_pull_some(dsn, api_key, api_base, accounts, streams, overlap_s)]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [
                pool.submit(_pull_some, dsn, api_key, api_base, share, streams, overlap_s)
                for share in shares
                if share
            ]
            parts = [f.result() for f in futures]
    for part in parts:
        total.fetched += part.fetched
        total.written += part.written
        total.quarantined += part.quarantined
    total.seconds = time.monotonic() - started
    return total
