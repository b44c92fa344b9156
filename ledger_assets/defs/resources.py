"""Resources shared by every domain, configured only through environment variables."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg


class PostgresResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The Postgres system of record (a DSN; the private cluster's when run by the demo)."""

    dsn: str

    @contextmanager
    def connect(self, autocommit: bool = True) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        with psycopg.connect(self.dsn, autocommit=autocommit, connect_timeout=10) as conn:
            yield conn


RESOURCES: dict[str, object] = {
    "postgres": PostgresResource(dsn=dg.EnvVar("LEDGER_PG_DSN")),
}
