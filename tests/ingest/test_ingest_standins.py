"""Ingestion through the real SDKs against the stand-ins over HTTP.

The stand-ins serve the same history that ``seed_database`` would load for the same spec, so a
backfill must reproduce exactly the rows of a direct seed: that is the oracle.
"""

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
import stripe

from ledger_assets.lib.ingest import plaid_sync, stripe_pull
from ledger_assets.lib.ingest.inbox import apply_stripe_events
from ledger_assets.lib.ingest.onboarding import register_plaid_items, sync_tenants_from_stripe
from ledger_assets.lib.ingest.plaid_sync import PlaidItem, SyncRestartsExhaustedError, sync_item
from ledger_assets.lib.ingest.stripe_pull import OBJECT_STREAMS, StripeAccount, pull_stream
from ledger_assets.lib.standins import DEFAULT_STRIPE_API_KEY, StandinServers
from ledger_assets.lib.synth.load import seed_database
from ledger_assets.lib.synth.spec import SeedSpec
from tests.conftest import TEMPLATE_DB, create_database, drop_database

END = date(2026, 3, 1)


def spec() -> SeedSpec:
    return SeedSpec(
        seed=5, tenants=3, start=END - timedelta(days=150), days=150, target_rows=5000,
        dispute_rate=0.05, refund_rate=0.1, tenant_size_sigma=0.3,
    )  # fmt: skip


class Clock:
    now = datetime.combine(END, datetime.min.time(), UTC).timestamp() + 3600

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def servers() -> Iterator[StandinServers]:
    with StandinServers.start(spec(), clock=Clock()) as running:
        yield running


@pytest.fixture
def oracle(pg_cluster: Any) -> Iterator[str]:
    name = create_database(pg_cluster, TEMPLATE_DB)
    dsn = pg_cluster.dsn(name)
    seed_database(dsn, spec())
    yield dsn
    drop_database(pg_cluster, name)


def stripe_client(
    servers: StandinServers, retries: int = 3, timeout_s: float = 30.0
) -> stripe.StripeClient:
    return stripe_pull.make_client(DEFAULT_STRIPE_API_KEY, servers.stripe_url, retries, timeout_s)


def plaid_client(servers: StandinServers) -> Any:
    return plaid_sync.make_client(servers.plaid_url, "standin-client-id", "standin-secret")


def onboard(dsn: str, servers: StandinServers) -> list[StripeAccount]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        report = sync_tenants_from_stripe(conn, stripe_client(servers))
        register_plaid_items(conn, servers.plaid_items())
        rows = conn.execute("select tenant_id, stripe_account_id from ledger.tenants").fetchall()
    assert report.tenants == spec().tenants
    return [StripeAccount(t, a) for t, a in rows]


def pull_all(dsn: str, servers: StandinServers, accounts: list[StripeAccount]) -> int:
    client = stripe_client(servers)
    fetched = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        for account in accounts:
            for stream in OBJECT_STREAMS:
                fetched += pull_stream(conn, client, account, stream).fetched
            # The oracle links every payout; the default window would link the recent ones.
            stripe_pull.link_payout_transactions(conn, client, account, window_days=None)
    return fetched


def sync_all(dsn: str, servers: StandinServers) -> None:
    client = plaid_client(servers)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for item in servers.plaid_items():
            sync_item(
                conn, client, PlaidItem(item["item_id"], item["tenant_id"], item["access_token"])
            )


COMPARED = {
    "tenants": "tenant_id, time_zone, default_currency, stripe_account_id",
    "stripe_charges": "id, tenant_id, amount, amount_captured, amount_refunded, currency, status, "
    "paid, captured, refunded, disputed, balance_transaction, created",
    "stripe_refunds": "id, tenant_id, charge, amount, currency, status, balance_transaction, "
    "created",
    "stripe_disputes": "id, tenant_id, charge, amount, currency, reason, status, "
    "balance_transactions, created",
    "stripe_payouts": "id, tenant_id, amount, currency, status, arrival_date, balance_transaction, "
    "created",
    "stripe_balance_transactions": "id, tenant_id, amount, fee, net, currency, type, "
    "reporting_category, source, status, payout, created, available_on, fee_details",
    "plaid_transactions": "transaction_id, tenant_id, item_id, account_id, amount, amount_minor, "
    "currency, date, pending, pending_transaction_id",
}


def table(dsn: str, name: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"select {COMPARED[name]} from ledger.{name} order by 1").fetchall()


def test_backfill_reproduces_the_seed_exactly_and_twice_changes_nothing(
    migrated_dsn: str, oracle: str, servers: StandinServers
) -> None:
    accounts = onboard(migrated_dsn, servers)
    fetched = pull_all(migrated_dsn, servers, accounts)
    sync_all(migrated_dsn, servers)
    assert fetched > 1000
    for name in COMPARED:
        assert table(migrated_dsn, name) == table(oracle, name), name
    snapshot = {name: table(migrated_dsn, name) for name in COMPARED}
    # A second run re-reads only the overlap window and finds nothing new.
    again = pull_all(migrated_dsn, servers, accounts)
    sync_all(migrated_dsn, servers)
    assert again < fetched / 10
    assert {name: table(migrated_dsn, name) for name in COMPARED} == snapshot


def test_429_and_500_are_retried_and_a_crash_mid_pull_resumes(
    migrated_dsn: str, oracle: str, servers: StandinServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts = onboard(migrated_dsn, servers)
    servers.stripe_fault(status=429, count=2, path_prefix="/v1/charges")
    servers.stripe_fault(status=500, count=2, path_prefix="/v1/balance_transactions")
    # The process dies after the first merged batch of balance transactions.
    original = stripe_pull._flush
    calls = {"n": 0}

    def dying_flush(*args: Any, **kwargs: Any) -> None:
        original(*args, **kwargs)
        calls["n"] += 1
        if args[1] == "balance_transactions" and calls["n"] >= 2:
            raise KeyboardInterrupt("killed mid-pull")

    monkeypatch.setattr(stripe_pull, "_flush", dying_flush)

    def pull_account_until_killed() -> None:
        with psycopg.connect(migrated_dsn, autocommit=True) as conn:
            for stream in OBJECT_STREAMS:
                pull_stream(conn, stripe_client(servers), accounts[0], stream, batch_size=50)

    with pytest.raises(KeyboardInterrupt):
        pull_account_until_killed()
    monkeypatch.setattr(stripe_pull, "_flush", original)
    pull_all(migrated_dsn, servers, accounts)
    for name in ("stripe_charges", "stripe_balance_transactions", "stripe_disputes"):
        assert table(migrated_dsn, name) == table(oracle, name), name


def test_without_retries_a_500_is_a_clear_error_and_nothing_moves(
    migrated_dsn: str, servers: StandinServers
) -> None:
    accounts = onboard(migrated_dsn, servers)
    servers.stripe_fault(status=500, count=1, path_prefix="/v1/charges")
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        with pytest.raises(stripe.APIError):
            pull_stream(conn, stripe_client(servers, retries=0), accounts[0], "charges")
        assert stripe_pull.read_cursor(conn, "charges", accounts[0].account_id) is None


def test_a_stuck_response_times_out_and_is_retried(
    migrated_dsn: str, oracle: str, servers: StandinServers
) -> None:
    accounts = onboard(migrated_dsn, servers)
    servers.stripe_fault(delay_s=3.0, count=1, path_prefix="/v1/charges")
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        with pytest.raises(stripe.APIConnectionError):
            pull_stream(conn, stripe_client(servers, retries=0, timeout_s=1.0), accounts[0],
                        "charges")  # fmt: skip
        assert stripe_pull.read_cursor(conn, "charges", accounts[0].account_id) is None
        servers.stripe_fault(delay_s=3.0, count=1, path_prefix="/v1/charges")
        pull_stream(conn, stripe_client(servers, retries=2, timeout_s=1.0), accounts[0], "charges")
    charges = [r for r in table(oracle, "stripe_charges") if r[1] == accounts[0].tenant_id]
    assert [r for r in table(migrated_dsn, "stripe_charges")] == charges


def test_plaid_mutation_during_pagination_restarts_from_the_first_cursor(
    migrated_dsn: str, oracle: str, servers: StandinServers
) -> None:
    onboard(migrated_dsn, servers)
    item = servers.plaid_items()[0]
    servers.plaid_fault(mutation_page=2, item_id=item["item_id"])
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        report = sync_item(
            conn, plaid_client(servers),
            PlaidItem(item["item_id"], item["tenant_id"], item["access_token"]), page_count=20,
        )  # fmt: skip
    assert report.restarts == 1
    assert report.pages > 2
    sync_all(migrated_dsn, servers)
    assert table(migrated_dsn, "plaid_transactions") == table(oracle, "plaid_transactions")


def test_plaid_item_that_never_stops_mutating_keeps_its_cursor(
    migrated_dsn: str, servers: StandinServers
) -> None:
    onboard(migrated_dsn, servers)
    item = servers.plaid_items()[0]
    plaid_item = PlaidItem(item["item_id"], item["tenant_id"], item["access_token"])
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        for _ in range(3):
            servers.plaid_fault(mutation_page=2, item_id=item["item_id"])
        with pytest.raises(SyncRestartsExhaustedError, match="cursor was kept"):
            sync_item(conn, plaid_client(servers), plaid_item, max_restarts=2, page_count=20)
        assert conn.execute("select count(*) from ledger.plaid_transactions").fetchone() == (0,)
        assert conn.execute("select count(*) from ledger.ingestion_cursors").fetchone() == (0,)


def test_live_activity_and_late_disputes_arrive_by_pull(
    migrated_dsn: str, servers: StandinServers
) -> None:
    accounts = onboard(migrated_dsn, servers)
    pull_all(migrated_dsn, servers, accounts)
    with psycopg.connect(migrated_dsn) as conn:
        before = conn.execute("select count(*) from ledger.stripe_charges").fetchone()
    Clock.now += 120
    servers.tick(5)
    pull_all(migrated_dsn, servers, accounts)
    with psycopg.connect(migrated_dsn) as conn:
        after = conn.execute("select count(*) from ledger.stripe_charges").fetchone()
    assert after[0] > before[0]  # type: ignore[index]


def test_events_feed_reaches_the_inbox_and_applies_in_source_order(
    migrated_dsn: str, servers: StandinServers
) -> None:
    accounts = onboard(migrated_dsn, servers)
    pull_all(migrated_dsn, servers, accounts)
    Clock.now += 300
    servers.tick(20)  # live activity: new charges, refunds, dispute updates, with events
    client = stripe_client(servers)
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        landed = sum(
            pull_stream(conn, client, account, stripe_pull.EVENTS_STREAM).events_landed
            for account in accounts
        )
        again = sum(
            pull_stream(conn, client, account, stripe_pull.EVENTS_STREAM).events_landed
            for account in accounts
        )
        applied = apply_stripe_events(conn)
        pending = conn.execute(
            "select count(*) from ledger.webhook_inbox where status = 'received'"
        ).fetchone()
    assert landed > 0
    assert again == 0  # the overlap re-reads them; the inbox keeps each event once
    assert applied.applied + applied.ignored + applied.quarantined == landed
    assert pending == (0,)


def test_dagster_ingestion_asset_reports_rows_and_cursors(
    migrated_dsn: str, servers: StandinServers
) -> None:
    import dagster as dg

    from ledger_assets.defs.resources import PostgresResource, StripeResource
    from ledger_assets.defs.stripe.assets import stripe_ingestion

    onboard(migrated_dsn, servers)
    result = dg.materialize(
        [stripe_ingestion],
        resources={
            "postgres": PostgresResource(dsn=migrated_dsn),
            "stripe": StripeResource(api_key=DEFAULT_STRIPE_API_KEY, api_base=servers.stripe_url),
        },
    )
    assert result.success
    by_key = {
        m.asset_key.path[-1]: m.metadata
        for m in result.asset_materializations_for_node("stripe_ingestion")
    }
    assert by_key["stripe_charges"]["rows_inserted"].value > 0
    assert by_key["stripe_charges"]["objects_fetched"].value > 0
    assert by_key["stripe_charges"]["cursors"].value  # cursor positions per account/stream


def test_a_quiet_account_costs_one_events_read(migrated_dsn: str, servers: StandinServers) -> None:
    accounts = onboard(migrated_dsn, servers)
    client = stripe_client(servers)
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        first = stripe_pull.pull_account(conn, client, accounts[0])
        quiet = stripe_pull.pull_account(conn, client, accounts[0])
        Clock.now += 300
        servers.tick(30)  # new activity somewhere: events appear for the accounts it touched
        after = [stripe_pull.pull_account(conn, client, a) for a in accounts]
    assert [r.stream for r in first] == ["events", *OBJECT_STREAMS]
    assert [r.stream for r in quiet] == ["events"]
    busy = [reports for reports in after if len(reports) > 1]
    assert busy, "a tick with new objects must trigger full pulls"
    assert all(sum(r.events_landed for r in reports) > 0 for reports in busy)
