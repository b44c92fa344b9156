"""Publication and replication-slot management, and slot health.

Everything here is plain SQL over a psycopg 3 connection, with identifiers composed through
:mod:`psycopg.sql`. The slot is a pgoutput logical slot; the publication lists the mirrored
tables and publishes insert, update, delete and truncate, with no row filter or column list
(either would drop changes the lake needs, silently).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ledger_assets.lib.cdc.errors import PublicationMismatchError
from ledger_assets.lib.cdc.lsn import Lsn

Conn = psycopg.Connection[tuple[object, ...]]
PLUGIN = "pgoutput"


def _lsn(value: object) -> Lsn | None:
    return None if value is None else Lsn.parse(str(value))


def ensure_publication(conn: Conn, publication: str, schema: str, tables: Sequence[str]) -> bool:
    """Create the publication if it is missing, else check it publishes exactly ``tables``.

    Returns:
        True when the publication was created.

    Raises:
        PublicationMismatchError: when an existing publication lists other tables, misses an
            action, or filters rows or columns.
    """
    row = conn.execute(
        "select pubinsert, pubupdate, pubdelete, pubtruncate, puballtables"
        " from pg_publication where pubname = %s",
        (publication,),
    ).fetchone()
    if row is None:
        targets = sql.SQL(", ").join(sql.Identifier(schema, t) for t in tables)
        conn.execute(
            sql.SQL(
                "create publication {} for table {}"
                " with (publish = 'insert, update, delete, truncate')"
            ).format(sql.Identifier(publication), targets)
        )
        return True
    if not all(row[:4]) or row[4]:
        raise PublicationMismatchError(
            f"publication {publication} must publish insert, update, delete and truncate for"
            f" listed tables only (has insert/update/delete/truncate/all_tables = {row})"
        )
    published = conn.execute(
        "select n.nspname, c.relname, r.prqual is not null, r.prattrs is not null"
        " from pg_publication_rel r join pg_publication p on p.oid = r.prpubid"
        " join pg_class c on c.oid = r.prrelid join pg_namespace n on n.oid = c.relnamespace"
        " where p.pubname = %s",
        (publication,),
    ).fetchall()
    names = {(str(r[0]), str(r[1])) for r in published}
    wanted = {(schema, t) for t in tables}
    filtered = sorted(f"{r[0]}.{r[1]}" for r in published if r[2] or r[3])
    if names != wanted or filtered:
        missing = sorted(f"{s}.{t}" for s, t in wanted - names)
        extra = sorted(f"{s}.{t}" for s, t in names - wanted)
        raise PublicationMismatchError(
            f"publication {publication} does not match the mirrored tables"
            f" (missing {missing}, extra {extra}, filtered {filtered})"
        )
    return False


@dataclass(frozen=True)
class SlotInfo:
    """A row of ``pg_replication_slots`` plus the server's WAL position."""

    slot_name: str
    plugin: str | None
    slot_type: str
    database: str | None
    temporary: bool
    active: bool
    restart_lsn: Lsn | None
    confirmed_flush_lsn: Lsn | None
    #: reserved | extended | unreserved | lost (PG13+); ``lost`` means WAL it needs is gone.
    wal_status: str | None
    #: Bytes of WAL that can still be written before the slot is at risk (max_slot_wal_keep_size);
    #: None when unlimited.
    safe_wal_size: int | None
    current_wal_lsn: Lsn

    @property
    def retained_wal_bytes(self) -> int | None:
        """WAL the server keeps for this slot: ``current - restart_lsn``."""
        return None if self.restart_lsn is None else self.current_wal_lsn - self.restart_lsn

    @property
    def lag_bytes(self) -> int | None:
        """WAL written since the last confirmed position: ``current - confirmed_flush_lsn``."""
        if self.confirmed_flush_lsn is None:
            return None
        return self.current_wal_lsn - self.confirmed_flush_lsn


def read_slot(conn: Conn, slot_name: str) -> SlotInfo | None:
    """The slot's catalog row, or None when no slot has that name."""
    row = conn.execute(
        "select slot_name, plugin, slot_type, database, temporary, active, restart_lsn::text,"
        " confirmed_flush_lsn::text, wal_status, safe_wal_size, pg_current_wal_lsn()::text"
        " from pg_replication_slots where slot_name = %s",
        (slot_name,),
    ).fetchone()
    if row is None:
        return None
    current = _lsn(row[10])
    assert current is not None  # pg_current_wal_lsn() is never NULL on a primary
    return SlotInfo(
        slot_name=str(row[0]),
        plugin=None if row[1] is None else str(row[1]),
        slot_type=str(row[2]),
        database=None if row[3] is None else str(row[3]),
        temporary=bool(row[4]),
        active=bool(row[5]),
        restart_lsn=_lsn(row[6]),
        confirmed_flush_lsn=_lsn(row[7]),
        wal_status=None if row[8] is None else str(row[8]),
        safe_wal_size=None if row[9] is None else int(str(row[9])),
        current_wal_lsn=current,
    )


def create_slot(conn: Conn, slot_name: str) -> Lsn:
    """Create a pgoutput logical slot; return its consistent point (where decoding starts)."""
    row = conn.execute(
        "select lsn::text from pg_create_logical_replication_slot(%s, %s)", (slot_name, PLUGIN)
    ).fetchone()
    assert row is not None
    return Lsn.parse(str(row[0]))


def drop_slot(conn: Conn, slot_name: str) -> bool:
    """Drop the slot if it exists; True when one was dropped."""
    row = conn.execute(
        "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = %s",
        (slot_name,),
    ).fetchone()
    return row is not None


def advance_slot(conn: Conn, slot_name: str, lsn: Lsn) -> Lsn:
    """Confirm everything before ``lsn`` to the slot; return the position it reached.

    This is the only call that lets Postgres recycle WAL, so it runs strictly after the
    batch ending at ``lsn`` is durable in the change log.
    """
    row = conn.execute(
        "select end_lsn::text from pg_replication_slot_advance(%s, %s::pg_lsn)",
        (slot_name, str(lsn)),
    ).fetchone()
    assert row is not None
    return Lsn.parse(str(row[0]))


def system_identifier(conn: Conn) -> str:
    """The cluster's unique id (from ``initdb``); differs on a restored or other cluster."""
    row = conn.execute("select system_identifier::text from pg_control_system()").fetchone()
    assert row is not None
    return str(row[0])


def current_flush_lsn(conn: Conn) -> Lsn:
    """The WAL position known flushed to disk.

    Used as every read's upper bound rather than ``pg_current_wal_lsn()``: decoding only sees
    flushed WAL, so a bound past the flush point (possible under ``synchronous_commit = off``)
    could make an empty read look like "nothing committed up to here" when a commit is merely
    not flushed yet, and advancing to that bound would skip it.
    """
    row = conn.execute("select pg_current_wal_flush_lsn()::text").fetchone()
    assert row is not None
    return Lsn.parse(str(row[0]))


@dataclass(frozen=True)
class SlotSnapshot:
    """A new slot and the snapshot that is exactly consistent with its start."""

    consistent_lsn: Lsn
    #: Pass to ``SET TRANSACTION SNAPSHOT`` in a REPEATABLE READ transaction, while the
    #: context manager is open, to read the tables as of ``consistent_lsn``.
    snapshot_name: str


@contextmanager
def exported_snapshot_slot(dsn: str, slot_name: str) -> Iterator[SlotSnapshot]:
    """Create the slot over a replication connection and export its snapshot.

    Every change committed after the snapshot is decoded by the slot, and nothing committed
    before it, so a table copied under this snapshot plus the slot's changes is exact at the
    seam. The snapshot stays importable only while this context is open.
    """
    with psycopg.connect(dsn, autocommit=True, replication="database") as repl:
        row = repl.execute(
            sql.SQL("CREATE_REPLICATION_SLOT {} LOGICAL {} (SNAPSHOT 'export')").format(
                sql.Identifier(slot_name), sql.Identifier(PLUGIN)
            )
        ).fetchone()
        assert row is not None
        yield SlotSnapshot(Lsn.parse(str(row[1])), str(row[2]))
