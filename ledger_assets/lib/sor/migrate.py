"""Versioned schema migrations for the system of record.

Migrations are plain SQL files named ``NNNN_description.sql`` beside this module. Each runs in
its own transaction together with the row that records it, so a failing migration leaves no
trace and the next run retries it. A transaction-scoped advisory lock serializes concurrent
runners (two ``dagster dev`` processes, a test and the demo). Applied files are checksummed: a
migration edited after it was applied is refused instead of silently diverging.

Why not Alembic or yoyo: the schema is SQL-first (RLS policies, replica identity, triggers),
there is no ORM to autogenerate from, and the whole runner is the ~80 lines below on top of the
psycopg connection the rest of the project uses.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# An arbitrary constant: the advisory-lock key that all migration runners agree on.
_LOCK_KEY = 0x1ED6E2A55E75


class MigrationError(RuntimeError):
    """A migration could not be applied; the message names it and says what to do."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    """All migrations in ``folder``, in version order; malformed names are an error."""
    migrations = []
    for path in sorted(folder.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files must be named NNNN_name.sql")
        migrations.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {folder}")
    return migrations


def applied_versions(conn: psycopg.Connection[tuple[object, ...]]) -> dict[int, str]:
    """Version -> checksum of what this database has applied (empty for a new database)."""
    exists = conn.execute("select to_regclass('ledger_meta.schema_migrations')").fetchone()
    if exists is None or exists[0] is None:
        return {}
    rows = conn.execute("select version, checksum from ledger_meta.schema_migrations").fetchall()
    return {int(str(v)): str(c) for v, c in rows}


def migrate(conninfo: str, folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply every pending migration; return the ones applied now (empty when up to date).

    Raises:
        MigrationError: a migration failed (nothing of it remains) or an applied file changed.
    """
    migrations = discover(folder)
    applied_now: list[Migration] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("create schema if not exists ledger_meta")
        conn.execute(
            """
            create table if not exists ledger_meta.schema_migrations (
                version    integer primary key,
                name       text not null,
                checksum   text not null,
                applied_at timestamptz not null default now()
            )
            """
        )
        for migration in migrations:
            with conn.transaction():
                conn.execute("select pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                done = applied_versions(conn)
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version:04d}_{migration.name} was edited "
                            "after it was applied: restore the file and add a new migration"
                        )
                    continue
                try:
                    conn.execute(migration.sql.encode())
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} failed and was "
                        f"rolled back: {str(exc).strip().splitlines()[0]}"
                    ) from exc
                conn.execute(
                    "insert into ledger_meta.schema_migrations (version, name, checksum) "
                    "values (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
                applied_now.append(migration)
    return applied_now
