"""Shared fixtures: a throwaway Postgres cluster with logical replication, fresh databases.

One cluster serves the whole session (starting one costs ~1.5 s). Every test that needs the
system of record gets a database of its own, cloned from a migrated template, so tests never
see each other's rows, slots or publications.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ledger_assets.lib.signals import handle_sigint_if_ignored
from ledger_assets.lib.sor.migrate import migrate
from ledger_assets.lib.sor.pgcluster import PrivateCluster, find_free_port

TEMPLATE_DB = "ledger_template"


def pytest_configure(config: pytest.Config) -> None:
    # A test's `dagster dev` must stop on terminate() even when the suite runs as a background
    # job (SIGINT inherited as ignored, see lib/signals.py).
    handle_sigint_if_ignored()


def world_searchable_tmpdir(prefix: str) -> Path:
    """A temp folder the unprivileged Postgres account can reach when tests run as root.

    pytest's tmp_path lives under /tmp/pytest-of-root (mode 0700), which ``nobody`` cannot
    traverse, so clusters get folders of their own.
    """
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("LEDGER_TEST_TMP", "/tmp")))
    folder.chmod(0o755)
    return folder


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PrivateCluster]:
    root = world_searchable_tmpdir("ledger-test-pg-")
    cluster = PrivateCluster(root / "cluster", find_free_port())
    cluster.start()
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(TEMPLATE_DB)))
    migrate(cluster.dsn(TEMPLATE_DB))
    try:
        yield cluster
    finally:
        cluster.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


def create_database(cluster: PrivateCluster, template: str) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("create database {} template {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    return name


def drop_database(cluster: PrivateCluster, name: str) -> None:
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        # Slots pin a database: tests that created one may have left it behind on failure.
        conn.execute(
            "select pg_drop_replication_slot(slot_name) from pg_replication_slots "
            "where database = %s and not active",
            (name,),
        )
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )


@pytest.fixture
def migrated_dsn(pg_cluster: PrivateCluster) -> Iterator[str]:
    """A fresh, fully migrated database (superuser DSN), dropped after the test."""
    name = create_database(pg_cluster, TEMPLATE_DB)
    try:
        yield pg_cluster.dsn(name)
    finally:
        drop_database(pg_cluster, name)


@pytest.fixture
def empty_dsn(pg_cluster: PrivateCluster) -> Iterator[str]:
    """A fresh database with no migrations applied."""
    name = create_database(pg_cluster, "template1")
    try:
        yield pg_cluster.dsn(name)
    finally:
        drop_database(pg_cluster, name)
