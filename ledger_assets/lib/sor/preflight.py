"""Checks that a Postgres server can serve as the system of record and the CDC source.

Run before anything else touches a user-supplied DSN, so that a wrong DSN or a server without
logical replication produces one clear sentence instead of a failure deep inside a sensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


class PreflightError(RuntimeError):
    """The server cannot be used; the message says why and what to change."""


@dataclass(frozen=True)
class ServerFacts:
    version_num: int
    wal_level: str
    max_replication_slots: int
    max_wal_senders: int
    can_replicate: bool
    #: True when the role can create ledger_app, or ledger_app already exists.
    can_create_roles: bool


def connect_or_explain(
    conninfo: str, connect_timeout_s: int = 5
) -> psycopg.Connection[tuple[object, ...]]:
    """Open a connection, turning libpq's multi-line errors into one line with a hint."""
    try:
        return psycopg.connect(conninfo, connect_timeout=connect_timeout_s, autocommit=True)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PreflightError(
            f"cannot connect to Postgres ({first}): check LEDGER_PG_DSN, or unset it to use "
            "the private cluster"
        ) from exc


def read_server_facts(conn: psycopg.Connection[tuple[object, ...]]) -> ServerFacts:
    row = conn.execute(
        """
        select current_setting('server_version_num')::int,
               current_setting('wal_level'),
               current_setting('max_replication_slots')::int,
               current_setting('max_wal_senders')::int,
               r.rolsuper or r.rolreplication,
               r.rolsuper or r.rolcreaterole
                   or exists (select 1 from pg_roles where rolname = 'ledger_app')
        from pg_roles r where r.rolname = current_user
        """
    ).fetchone()
    assert row is not None
    return ServerFacts(
        version_num=int(str(row[0])),
        wal_level=str(row[1]),
        max_replication_slots=int(str(row[2])),
        max_wal_senders=int(str(row[3])),
        can_replicate=bool(row[4]),
        can_create_roles=bool(row[5]),
    )


def problems_with(facts: ServerFacts) -> list[str]:
    """Everything that stops this server from being our source, as actionable sentences."""
    problems = []
    if facts.version_num < 140000:
        problems.append(f"server version {facts.version_num} is older than PostgreSQL 14")
    if facts.wal_level != "logical":
        problems.append(
            f"wal_level is {facts.wal_level!r}; set wal_level = logical and restart the server"
        )
    if facts.max_replication_slots < 1:
        problems.append("max_replication_slots is 0; set it to at least 4 and restart")
    if facts.max_wal_senders < 1:
        problems.append("max_wal_senders is 0; set it to at least 4 and restart")
    if not facts.can_replicate:
        problems.append("the DSN's role lacks REPLICATION; ALTER ROLE ... WITH REPLICATION")
    if not facts.can_create_roles:
        problems.append(
            "the DSN's role lacks CREATEROLE (migrations create the ledger_app role); grant it "
            "or create ledger_app NOLOGIN NOBYPASSRLS beforehand"
        )
    return problems


def check_server(conninfo: str) -> ServerFacts:
    """Connect and verify the server is usable; raise :class:`PreflightError` if not."""
    with connect_or_explain(conninfo) as conn:
        facts = read_server_facts(conn)
    problems = problems_with(facts)
    if problems:
        raise PreflightError("this Postgres cannot be the CDC source: " + "; ".join(problems))
    return facts
