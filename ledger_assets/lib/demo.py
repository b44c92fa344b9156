"""The demo's moving parts around the system of record: stand-ins, webhook receiver, onboarding.

``ledger demo`` (cli.py) starts these, then ``dagster dev``. With ``STRIPE_API_BASE`` /
``PLAID_HOST`` pointing at the real services the stand-ins are not started and the same code
talks to Stripe and Plaid.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from ledger_assets.lib.asgi import serve_in_thread
from ledger_assets.lib.ingest import plaid_sync, stripe_pull
from ledger_assets.lib.ingest.onboarding import register_plaid_items, sync_tenants_from_stripe
from ledger_assets.lib.ingest.plaid_sync import PlaidItem, sync_item, verification_key_fetcher
from ledger_assets.lib.ingest.stripe_pull import (
    OBJECT_STREAMS,
    StripeAccount,
    link_payout_transactions,
    pull_stream,
)
from ledger_assets.lib.logs import get_logger
from ledger_assets.lib.sor.catalog import plaid_items, stripe_accounts
from ledger_assets.lib.standins import (
    DEFAULT_PLAID_CLIENT_ID,
    DEFAULT_PLAID_SECRET,
    DEFAULT_STRIPE_API_KEY,
    DEFAULT_STRIPE_WEBHOOK_SECRET,
    StandinServers,
)
from ledger_assets.lib.standins.slack import build_slack_standin
from ledger_assets.lib.synth.spec import SeedSpec
from ledger_assets.lib.webhooks.receiver import ReceiverConfig, build_receiver

log = get_logger(__name__)


@dataclass(frozen=True)
class ProviderSettings:
    """How to reach Stripe and Plaid (the stand-ins' values by default)."""

    stripe_api_key: str
    stripe_api_base: str
    stripe_webhook_secret: str
    plaid_host: str
    plaid_client_id: str
    plaid_secret: str

    def as_env(self) -> dict[str, str]:
        return {
            "STRIPE_API_KEY": self.stripe_api_key,
            "STRIPE_API_BASE": self.stripe_api_base,
            "STRIPE_WEBHOOK_SECRET": self.stripe_webhook_secret,
            "PLAID_HOST": self.plaid_host,
            "PLAID_CLIENT_ID": self.plaid_client_id,
            "PLAID_SECRET": self.plaid_secret,
        }


def provider_settings_from_env(stripe_port: int, plaid_port: int) -> tuple[ProviderSettings, bool]:
    """Real Stripe/Plaid when their settings are given, else the local stand-ins."""
    env = os.environ
    use_standins = not env.get("STRIPE_API_BASE") and not env.get("PLAID_HOST")
    return (
        ProviderSettings(
            stripe_api_key=env.get("STRIPE_API_KEY") or DEFAULT_STRIPE_API_KEY,
            stripe_api_base=env.get("STRIPE_API_BASE") or f"http://127.0.0.1:{stripe_port}",
            stripe_webhook_secret=(
                env.get("STRIPE_WEBHOOK_SECRET") or DEFAULT_STRIPE_WEBHOOK_SECRET
            ),
            plaid_host=env.get("PLAID_HOST") or f"http://127.0.0.1:{plaid_port}",
            plaid_client_id=env.get("PLAID_CLIENT_ID") or DEFAULT_PLAID_CLIENT_ID,
            plaid_secret=env.get("PLAID_SECRET") or DEFAULT_PLAID_SECRET,
        ),
        use_standins,
    )


@contextmanager
def standins(
    spec: SeedSpec, stripe_port: int, plaid_port: int, webhook_base: str, interval_s: float
) -> Iterator[StandinServers]:
    """Live stand-ins in a child process, posting webhooks to ``webhook_base``."""
    servers = StandinServers.start(
        spec,
        live=True,
        in_process=False,
        interval_s=interval_s,
        stripe_port=stripe_port,
        plaid_port=plaid_port,
        stripe_webhook_url=f"{webhook_base}/webhooks/stripe",
        plaid_webhook_url=f"{webhook_base}/webhooks/plaid",
    )
    try:
        yield servers
    finally:
        servers.stop()


@contextmanager
def webhook_receiver(dsn: str, providers: ProviderSettings, host: str, port: int) -> Iterator[str]:
    """The webhook endpoints served by uvicorn in a background thread; yields the base URL."""
    plaid = plaid_sync.make_client(
        providers.plaid_host, providers.plaid_client_id, providers.plaid_secret
    )
    app = build_receiver(
        ReceiverConfig(dsn, providers.stripe_webhook_secret, verification_key_fetcher(plaid))
    )
    with serve_in_thread(app, host, port, "webhooks") as url:
        yield url


@contextmanager
def alert_page(host: str, port: int) -> Iterator[str]:
    """The local Slack stand-in the demo's alerts are posted to; yields its webhook URL."""
    with serve_in_thread(build_slack_standin(), host, port, "alerts") as url:
        yield f"{url}/alerts"


def onboard_and_backfill(
    dsn: str, providers: ProviderSettings, linked_items: list[Mapping[str, object]]
) -> dict[str, int]:
    """Tenants from Connect accounts, Plaid items from Link, then a first full pull and sync."""
    client = stripe_pull.make_client(providers.stripe_api_key, providers.stripe_api_base)
    plaid = plaid_sync.make_client(
        providers.plaid_host, providers.plaid_client_id, providers.plaid_secret
    )
    totals = {"tenants": 0, "stripe_objects": 0, "plaid_items": 0}
    started = datetime.now(UTC)
    with psycopg.connect(dsn, autocommit=True) as conn:
        totals["tenants"] = sync_tenants_from_stripe(conn, client).tenants
        totals["plaid_items"] = register_plaid_items(conn, linked_items)
        for tenant_id, account_id in stripe_accounts(conn):
            for stream in OBJECT_STREAMS:
                report = pull_stream(conn, client, StripeAccount(tenant_id, account_id), stream)
                totals["stripe_objects"] += report.fetched
            # A first pull links every payout; later runs refresh the recent window only.
            link_payout_transactions(
                conn, client, StripeAccount(tenant_id, account_id), window_days=None
            )
        for item_id, tenant_id, token in plaid_items(conn):
            sync_item(conn, plaid, PlaidItem(item_id, tenant_id, token))
    log.info("onboarded and backfilled", **totals,
             seconds=round((datetime.now(UTC) - started).total_seconds(), 1))  # fmt: skip
    return totals
