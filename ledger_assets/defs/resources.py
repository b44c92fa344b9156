"""Resources shared by every domain, configured only through environment variables."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import psycopg
import stripe
from plaid.api import plaid_api

from ledger_assets.lib.cdc import CaptureConfig
from ledger_assets.lib.ingest import plaid_sync, stripe_pull
from ledger_assets.lib.lake.layout import LakeLayout
from ledger_assets.lib.lake.storage import S3_SCHEME


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


class LakeResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The Parquet lake and the CDC slot and publication that feed it.

    ``root`` is a local folder or ``s3://bucket/prefix`` (S3 settings: the standard AWS
    variables, see ``lib/lake/storage.py``). An S3 lake's writer locks and change log stay on
    this host, under ``<state_dir>/lake-local`` (ARCHITECTURE.md §6 "Storage").
    """

    root: str
    state_dir: str = ".state"
    slot_name: str = "ledger_lake"
    publication: str = "ledger_lake"

    @property
    def layout(self) -> LakeLayout:
        if self.root.startswith(S3_SCHEME):
            return LakeLayout(self.root, local_dir=Path(self.state_dir).resolve() / "lake-local")
        return LakeLayout(Path(self.root).resolve())

    @property
    def changelog_dir(self) -> Path:
        return self.layout.changelog_dir

    def capture_config(self, dsn: str) -> CaptureConfig:
        return CaptureConfig(
            dsn=dsn,
            changelog_dir=self.changelog_dir,
            slot_name=self.slot_name,
            publication=self.publication,
            # A sensor tick must stay well inside Dagster's sensor timeout.
            max_seconds=20.0,
            # Land an empty batch once 1 MB of unpublished WAL has passed: the watermark then
            # moves on a quiet database too, which is what ends the lake's "seeding" state
            # after a snapshot taken while nothing was being written.
            idle_advance_bytes=1 << 20,
        )


class SensorWaitResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """How long a tick of a latency-critical sensor keeps watching for new work.

    Dagster's sensor daemon starts a sensor's ticks one daemon pass apart (5 s at the most
    often), so work that appears just after a tick waited ~2.5 s on average, once per sensor on
    the dispute -> lake -> marts path. A tick that watches (cheaply: one small query per
    ``poll_seconds``) for up to ``seconds`` before returning empty sees the work as it lands.
    ``seconds`` stays under the daemon's 5 s pass, so the next pass finds the tick finished
    and starts the next one (the daemon's ``sensors: use_threads`` runs ticks side by side).
    Tests that tick a sensor by hand use 0: one look, as a plain sensor.
    """

    seconds: float = 4.0
    poll_seconds: float = 0.2


RESOURCES: dict[str, object] = {
    "postgres": PostgresResource(dsn=dg.EnvVar("LEDGER_PG_DSN")),
    "lake": LakeResource(
        root=dg.EnvVar("LEDGER_LAKE_ROOT"), state_dir=dg.EnvVar("LEDGER_STATE_DIR")
    ),
    "stripe": StripeResource(
        api_key=dg.EnvVar("STRIPE_API_KEY"), api_base=dg.EnvVar("STRIPE_API_BASE")
    ),
    "plaid": PlaidResource(
        host=dg.EnvVar("PLAID_HOST"),
        client_id=dg.EnvVar("PLAID_CLIENT_ID"),
        secret=dg.EnvVar("PLAID_SECRET"),
    ),
    "sensor_wait": SensorWaitResource(),
}
