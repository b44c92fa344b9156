"""Resources shared by every domain, configured only through environment variables."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg
import stripe
from plaid.api import plaid_api

from ledger_assets.lib.ingest import plaid_sync, stripe_pull


class PostgresResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The Postgres system of record (a DSN; the private cluster's when run by the demo)."""

    dsn: str

    @contextmanager
    def connect(self, autocommit: bool = True) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        with psycopg.connect(self.dsn, autocommit=autocommit, connect_timeout=10) as conn:
            yield conn


class StripeResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The Stripe API: a platform secret key; ``api_base`` points at the stand-in locally."""

    api_key: str
    api_base: str = ""
    max_network_retries: int = 3

    def client(self) -> stripe.StripeClient:
        return stripe_pull.make_client(
            self.api_key, self.api_base or None, self.max_network_retries
        )


class PlaidResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The Plaid API (``host`` is the stand-in locally, e.g. https://production.plaid.com)."""

    host: str
    client_id: str
    secret: str

    def client(self) -> plaid_api.PlaidApi:
        return plaid_sync.make_client(self.host, self.client_id, self.secret)


RESOURCES: dict[str, object] = {
    "postgres": PostgresResource(dsn=dg.EnvVar("LEDGER_PG_DSN")),
    "stripe": StripeResource(
        api_key=dg.EnvVar("STRIPE_API_KEY"), api_base=dg.EnvVar("STRIPE_API_BASE")
    ),
    "plaid": PlaidResource(
        host=dg.EnvVar("PLAID_HOST"),
        client_id=dg.EnvVar("PLAID_CLIENT_ID"),
        secret=dg.EnvVar("PLAID_SECRET"),
    ),
}
