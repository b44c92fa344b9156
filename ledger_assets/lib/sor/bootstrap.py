"""Bring up the system of record: the private cluster or a checked DSN, a database, migrations."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from ledger_assets.lib.settings import Settings
from ledger_assets.lib.sor.migrate import Migration, migrate
from ledger_assets.lib.sor.pgcluster import DEFAULT_DATABASE, PostgresBinaries, PrivateCluster
from ledger_assets.lib.sor.preflight import check_server


@dataclass(frozen=True)
class SystemOfRecord:
    dsn: str
    cluster: PrivateCluster | None
    applied: list[Migration]


def private_cluster(settings: Settings) -> PrivateCluster:
    return PrivateCluster(
        settings.private_cluster_root,
        settings.private_pg_port,
        binaries=PostgresBinaries.locate(settings.pg_bin),
        run_as=settings.pg_run_as,
    )


def ensure_database(cluster_dsn: str, name: str) -> None:
    """Create database ``name`` on the server of ``cluster_dsn`` if it does not exist."""
    with psycopg.connect(cluster_dsn, autocommit=True) as conn:
        found = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
        if not found:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))


def prepare(settings: Settings) -> SystemOfRecord:
    """Start or check the server, then migrate; returns the DSN the pipeline should use."""
    cluster = None
    if settings.pg_dsn:
        dsn = settings.pg_dsn
    else:
        cluster = private_cluster(settings)
        cluster.start()
        ensure_database(cluster.dsn("postgres"), DEFAULT_DATABASE)
        dsn = cluster.dsn()
    check_server(dsn)
    return SystemOfRecord(dsn=dsn, cluster=cluster, applied=migrate(dsn))


def recreate_private_database(settings: Settings) -> None:
    """Drop and recreate the private cluster's database (the demo's fresh start).

    Never used with a user's DSN. Replication slots of the database go first: a slot pins its
    database and would block the drop.
    """
    if settings.pg_dsn:
        raise ValueError("refusing to drop a database of LEDGER_PG_DSN")
    cluster = private_cluster(settings)
    cluster.start()
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        conn.execute(
            "select pg_drop_replication_slot(slot_name) from pg_replication_slots "
            "where database = %s",
            (DEFAULT_DATABASE,),
        )
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(
                sql.Identifier(DEFAULT_DATABASE)
            )
        )
