"""Load generated data into the system of record with binary COPY: :func:`seed_database`.

Pipeline: the calling thread generates tenant batches (numpy) and hands them to one loader
thread per table (two for balance transactions, whose tenant batches alternate between them);
each loader encodes its batches (numpy/Arrow, which release the GIL) and streams them through
``COPY ... FROM STDIN (FORMAT BINARY)`` on its own connection, so generation, encoding and two
Postgres backends work at the same time on a 2-core machine.

Atomicity: the seed either fully commits or leaves nothing. Each group loads in one
transaction; the transactions commit only after every group has loaded without error, and any
failure rolls all of them back. The one gap is between the first and the second ``COMMIT``
(milliseconds, after all data is in): a server crash exactly there would leave one group
committed, which the next run reports as "not empty" rather than loading twice. Without
superuser rights everything goes through a single connection and transaction instead.

Speed settings, and why they are safe for a trusted bulk seed:

* ``session_replication_role = replica`` (superuser only) skips the FK triggers, each of
  which would look up the parent row for every inserted row. This is what
  ``pg_restore --disable-triggers`` does. The generator guarantees referential integrity
  and ``tests/lib/test_synth_*`` prove it on loaded data. The role also skips the trigger that
  validates tenant zone names (it scans ``pg_timezone_names``, ~30 ms per row), so the zones
  are checked against the server once, in one query, before anything is written.
* ``synchronous_commit = off`` only lets COMMIT return before its WAL is flushed; a crash in
  that window loses the whole (uncommitted-looking) seed, never part of it.

Ids ascend in load order and rows arrive in (tenant, time) order, so every btree index is
appended at its right edge (within each stream of a table streamed twice).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import LiteralString, cast

import psycopg
from psycopg import sql

from ledger_assets.lib.synth.generate import TABLES, Batch, Generator
from ledger_assets.lib.synth.pgcopy import HEADER, TRAILER, Encoder
from ledger_assets.lib.synth.spec import SeedSpec

__all__ = [
    "SEED_TABLES",
    "SeedError",
    "SeedReport",
    "SeedSpec",
    "SeedTargetNotEmptyError",
    "TableLoad",
    "seed_database",
]

SCHEMA = "ledger"
#: Every table the seed fills, in FK order.
SEED_TABLES: tuple[str, ...] = (
    "tenants", "stripe_charges", "stripe_refunds", "stripe_disputes", "stripe_payouts",
    "stripe_balance_transactions", "plaid_items", "plaid_accounts", "plaid_transactions",
)  # fmt: skip
#: Single-connection mode: encoded bytes buffered before a round of COPY statements, large
#: enough that the per-statement overhead vanishes, small enough to keep memory bounded.
FLUSH_BYTES = 48 * 1024 * 1024
_QUEUE_DEPTH = 8
#: Tables streamed through more than one connection (tenant batches alternate between them).
#: Balance transactions are 40% of the rows and the costliest per row (jsonb): on one backend
#: they set the pace of the whole seed while the other core waits (their loader was never idle,
#: the others were idle most of the time).
_STREAMS: dict[str, int] = {"stripe_balance_transactions": 2}
_POLL_S = 0.2


class SeedError(RuntimeError):
    """The seed failed and nothing was committed."""


class SeedTargetNotEmptyError(SeedError):
    """The target database already holds rows in tables the seed fills."""


@dataclass(frozen=True)
class TableLoad:
    """Rows and COPY time of one table.

    Attributes:
        table: table name in schema ``ledger``.
        rows: rows loaded.
        copy_seconds: time this table's COPY statements were open (summed over its streams).
        wait_seconds: part of ``copy_seconds`` spent waiting for the generator (a streamed
            COPY stays open for the whole seed).
    """

    table: str
    rows: int
    copy_seconds: float
    wait_seconds: float = 0.0

    @property
    def busy_seconds(self) -> float:
        """COPY time not spent waiting for data: what the server needed for this table."""
        return max(self.copy_seconds - self.wait_seconds, 0.0)

    @property
    def rows_per_second(self) -> float:
        """Rows per busy second: the table's own load rate."""
        return self.rows / self.busy_seconds if self.busy_seconds > 0 else 0.0


@dataclass(frozen=True)
class SeedReport:
    """What :func:`seed_database` loaded and how fast.

    Attributes:
        spec: the spec that was loaded.
        tables: per-table loads in FK order.
        seconds: wall time from start to committed, excluding ANALYZE.
        analyze_seconds: time of the ANALYZE that follows the commit (0 if skipped).
        connections: how many connections loaded in parallel.
        index_seconds: time each connection spent rebuilding its secondary indexes (inside
            ``seconds``).
        idle_seconds: time each connection's loader waited for the generator; high values
            mean the client, not Postgres, limits the rate.
    """

    spec: SeedSpec
    tables: Mapping[str, TableLoad]
    seconds: float
    analyze_seconds: float
    connections: int
    index_seconds: tuple[float, ...] = ()
    idle_seconds: tuple[float, ...] = ()

    @property
    def row_counts(self) -> dict[str, int]:
        return {name: load.rows for name, load in self.tables.items()}

    @property
    def total_rows(self) -> int:
        return sum(load.rows for load in self.tables.values())

    @property
    def rows_per_second(self) -> float:
        return self.total_rows / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """A small human-readable table (the CLI prints it)."""
        lines = [f"{'table':<30}{'rows':>14}{'busy s':>10}{'rows/s':>12}"]
        for load in self.tables.values():
            lines.append(
                f"{load.table:<30}{load.rows:>14,}{load.busy_seconds:>10.2f}"
                f"{load.rows_per_second:>12,.0f}"
            )
        lines.append(
            f"{'total':<30}{self.total_rows:>14,}{self.seconds:>10.2f}{self.rows_per_second:>12,.0f}"
            f"   ({self.connections} connection(s); ANALYZE {self.analyze_seconds:.2f} s)"
        )
        lines.append(
            "index rebuild s per connection: "
            + ", ".join(f"{v:.2f}" for v in self.index_seconds)
            + "; loader idle s: "
            + ", ".join(f"{v:.2f}" for v in self.idle_seconds)
        )
        return "\n".join(lines)


def _qualified(table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(table))


@dataclass
class _Loader:
    """One connection and transaction for one table (streamed) or all tables (buffered)."""

    conninfo: str
    tables: tuple[str, ...]
    fk_checks: bool
    flush_bytes: int
    inbox: queue.Queue[Batch | None] = field(default_factory=lambda: queue.Queue(_QUEUE_DEPTH))
    rows: dict[str, int] = field(default_factory=dict)
    copy_seconds: dict[str, float] = field(default_factory=dict)
    error: BaseException | None = None
    conn: psycopg.Connection[tuple[object, ...]] | None = None
    index_seconds: float = 0.0
    idle_seconds: float = 0.0
    #: Loaders sharing this loader's one table, each in its own transaction.
    streams: int = 1

    def __post_init__(self) -> None:
        self._encoders = {t: Encoder(TABLES[t]) for t in self.tables}
        self._pending: dict[str, list[bytes | memoryview]] = {t: [] for t in self.tables}
        self._pending_bytes = 0
        self._replica = False
        self._finished = False
        self.thread = threading.Thread(target=self._run, name=f"seed-{self.tables[0]}", daemon=True)

    def open(self) -> None:
        """Connect, lock the group's tables and check that they are empty."""
        self.conn = psycopg.connect(self.conninfo, autocommit=False)
        self.conn.execute("set local synchronous_commit = off")
        targets = sql.SQL(", ").join(_qualified(t) for t in self.tables)
        # Conflicts with inserts and with a concurrent seed (readers are blocked only by the
        # index drops below, until the seed commits). A table shared by several streams takes
        # the mode COPY takes, which they can all hold; the other tables' locks still keep a
        # concurrent seed out.
        mode = sql.SQL("share row exclusive" if self.streams == 1 else "row exclusive")
        self.conn.execute(sql.SQL("lock table {} in {} mode").format(targets, mode))
        busy = [
            t
            for t in self.tables
            if self.conn.execute(
                sql.SQL("select exists (select from {})").format(_qualified(t))
            ).fetchone()
            == (True,)
        ]
        if busy:
            raise SeedTargetNotEmptyError(
                f"refusing to seed: {', '.join(f'{SCHEMA}.{t}' for t in busy)} already hold rows; "
                "seed only a freshly migrated database (drop and re-create it to start over)"
            )
        # Indexes are dropped and rebuilt after the data, as pg_restore does: a sorted build
        # costs a fraction of maintaining them row by row (measured: ~2.6 of 7.5 s per million
        # balance transactions), and it writes its pages once instead of a WAL record per row.
        # It is DDL inside this transaction, so a failed seed rolls it back with the data.
        # That covers secondary indexes and the primary keys and unique constraints no foreign
        # key depends on (the tables nothing references); the keys FKs depend on stay, and
        # ascending ids keep them cheap. Dropping a primary key leaves its columns NOT NULL, so
        # re-adding it only builds the index.
        self._indexes = self.conn.execute(
            "select i.relname, pg_get_indexdef(x.indexrelid) from pg_index x "
            "join pg_class i on i.oid = x.indexrelid "
            "join pg_class t on t.oid = x.indrelid "
            "join pg_namespace n on n.oid = t.relnamespace "
            "where n.nspname = %s and t.relname = any(%s) "
            "and not exists (select from pg_constraint c where c.conindid = x.indexrelid) "
            "order by i.relname",
            (SCHEMA, list(self.tables)),
        ).fetchall()
        self._keys = self.conn.execute(
            "select t.relname, c.conname, pg_get_constraintdef(c.oid) from pg_constraint c "
            "join pg_class t on t.oid = c.conrelid "
            "join pg_namespace n on n.oid = t.relnamespace "
            "where n.nspname = %s and t.relname = any(%s) and c.contype in ('p', 'u') "
            "and not exists (select from pg_constraint f "
            "where f.contype = 'f' and f.conindid = c.conindid) "
            "order by t.relname, c.conname",
            (SCHEMA, list(self.tables)),
        ).fetchall()
        if self.streams > 1:
            # DDL would lock the other streams out until this transaction ends, and an index
            # built here could not see their rows: a shared table keeps its indexes.
            self._indexes, self._keys = [], []
        for name, _ in self._indexes:
            self.conn.execute(sql.SQL("drop index {}").format(_qualified(str(name))))
        for table, name, _ in self._keys:
            self.conn.execute(
                sql.SQL("alter table {} drop constraint {}").format(
                    _qualified(str(table)), sql.Identifier(str(name))
                )
            )

    def _rebuild_indexes(self) -> None:
        assert self.conn is not None
        started = time.perf_counter()
        self.conn.execute("set local maintenance_work_mem = '512MB'")
        # The definitions are the server's own pg_get_*def text, not outside input.
        for table, name, definition in self._keys:
            self.conn.execute(
                sql.SQL("alter table {} add constraint {} {}").format(
                    _qualified(str(table)),
                    sql.Identifier(str(name)),
                    sql.SQL(cast(LiteralString, definition)),
                )
            )
        for _, definition in self._indexes:
            self.conn.execute(cast(LiteralString, definition))
        self.index_seconds = time.perf_counter() - started

    def _next(self) -> Batch | None:
        waited = time.perf_counter()
        batch = self.inbox.get()
        self.idle_seconds += time.perf_counter() - waited
        self._finished = batch is None
        return batch

    def _run(self) -> None:
        try:
            if len(self.tables) == 1:
                self._stream(self.tables[0])
            else:
                while (batch := self._next()) is not None:
                    self._add(batch)
                self._flush()
            self._rebuild_indexes()
        except BaseException as exc:  # handed to the coordinating thread, which re-raises
            self.error = exc
            # Keep draining (until the end marker, unless it came already) so the producer
            # never blocks on a dead consumer.
            while not self._finished and self.inbox.get() is not None:
                pass

    def _copy_statement(self, table: str) -> sql.Composed:
        assert self.conn is not None
        if not self.fk_checks and not self._replica:
            self.conn.execute("set local session_replication_role = replica")
            self._replica = True
        return sql.SQL("copy {} ({}) from stdin (format binary)").format(
            _qualified(table),
            sql.SQL(", ").join(sql.Identifier(c) for c in self._encoders[table].columns),
        )

    def _stream(self, table: str) -> None:
        """One COPY for the whole seed: the server never waits for a buffer to fill."""
        assert self.conn is not None
        statement = self._copy_statement(table)
        started = time.perf_counter()
        with self.conn.cursor() as cur, cur.copy(statement) as copy:
            copy.write(HEADER)
            while (batch := self._next()) is not None:
                if batch.rows:
                    copy.write(self._encoders[table].encode(batch.values, batch.rows))
                    self.rows[table] = self.rows.get(table, 0) + batch.rows
            copy.write(TRAILER)
        self.copy_seconds[table] = time.perf_counter() - started

    def _add(self, batch: Batch) -> None:
        if batch.rows == 0:
            return
        body = self._encoders[batch.table].encode(batch.values, batch.rows)
        view = memoryview(body)
        self._pending[batch.table].append(view)
        self._pending_bytes += view.nbytes
        self.rows[batch.table] = self.rows.get(batch.table, 0) + batch.rows
        if self._pending_bytes >= self.flush_bytes:
            self._flush()

    def _flush(self) -> None:
        assert self.conn is not None
        # Group order is FK order, so parents are in before children when FKs are checked.
        for table in self.tables:
            parts = self._pending[table]
            if not parts:
                continue
            statement = self._copy_statement(table)
            started = time.perf_counter()
            with self.conn.cursor() as cur, cur.copy(statement) as copy:
                copy.write(HEADER)
                for part in parts:
                    copy.write(part)
                copy.write(TRAILER)
            self.copy_seconds[table] = self.copy_seconds.get(table, 0.0) + (
                time.perf_counter() - started
            )
            parts.clear()
        self._pending_bytes = 0


def _preflight(conninfo: str, zones: set[str]) -> bool:
    """Check the zones against the server; True if this role may skip FK checks (superuser)."""
    with psycopg.connect(conninfo) as conn:
        known = {
            name
            for (name,) in conn.execute(
                "select name from pg_timezone_names where name = any(%s)", (sorted(zones),)
            )
        }
        row = conn.execute("select rolsuper from pg_roles where rolname = current_user").fetchone()
    if zones - known:
        raise SeedError(f"the server's zone database lacks {', '.join(sorted(zones - known))}")
    return bool(row and row[0])


def _route(batches: Iterator[Batch], loaders: Sequence[_Loader]) -> None:
    owners: dict[str, list[_Loader]] = {}
    for loader in loaders:
        for table in loader.tables:
            owners.setdefault(table, []).append(loader)
    sent = dict.fromkeys(owners, 0)
    for batch in batches:
        streams = owners[batch.table]
        loader = streams[sent[batch.table] % len(streams)]
        sent[batch.table] += 1
        # A bounded put that notices a failed loader instead of waiting forever.
        while True:
            if any(other.error is not None for other in loaders):
                return
            try:
                loader.inbox.put(batch, timeout=_POLL_S)
                break
            except queue.Full:
                continue


def seed_database(
    conninfo: str,
    spec: SeedSpec,
    *,
    analyze: bool = True,
    parallel: bool = True,
    flush_bytes: int = FLUSH_BYTES,
) -> SeedReport:
    """Generate ``spec``'s data and load it into an empty, migrated system of record.

    Args:
        conninfo: a libpq connection string for the database (the schema owner or a superuser;
            a superuser loads faster, see the module docstring).
        spec: what to generate.
        analyze: run ANALYZE on the loaded tables afterwards, so plans are sane at once.
        parallel: load the two table groups on two connections (needs superuser; otherwise
            one connection is used regardless).
        flush_bytes: encoded bytes buffered per group between rounds of COPY.

    Returns:
        Row counts and timings per table.

    Raises:
        SeedTargetNotEmptyError: a target table already holds rows; nothing was written.
        SeedError: loading failed; nothing was committed (the cause is chained).
    """
    started = time.perf_counter()
    generator = Generator(spec)
    fast = _preflight(conninfo, {tenant.zone for tenant in generator.tenants})
    # With FK checks skipped, every table streams through its own connection and COPY (those in
    # _STREAMS through several), so the backends (one core each) never wait for each other or
    # for a buffer to fill. With FK checks on, children must see their parents' uncommitted
    # rows: one connection for all.
    groups: list[tuple[tuple[str, ...], int]] = (
        [((t,), _STREAMS.get(t, 1)) for t in SEED_TABLES for _ in range(_STREAMS.get(t, 1))]
        if (fast and parallel)
        else [(SEED_TABLES, 1)]
    )
    loaders = [
        _Loader(conninfo, group, fk_checks=not fast, flush_bytes=flush_bytes, streams=streams)
        for group, streams in groups
    ]
    try:
        for loader in loaders:
            loader.open()
        for loader in loaders:
            loader.thread.start()
        try:
            _route(generator.batches(), loaders)
        finally:
            for loader in loaders:
                loader.inbox.put(None)
            for loader in loaders:
                loader.thread.join()
        failed = next((loader.error for loader in loaders if loader.error is not None), None)
        if failed is not None:
            raise SeedError(f"seed failed and was rolled back: {failed}") from failed
        for loader in loaders:
            assert loader.conn is not None
            loader.conn.commit()
    finally:
        for loader in loaders:
            if loader.conn is not None:
                loader.conn.close()  # rolls back whatever did not commit
    seconds = time.perf_counter() - started

    analyze_seconds = 0.0
    if analyze:
        analyze_started = time.perf_counter()
        with psycopg.connect(conninfo, autocommit=True) as conn:
            for table in SEED_TABLES:
                conn.execute(sql.SQL("analyze {}").format(_qualified(table)))
        analyze_seconds = time.perf_counter() - analyze_started

    tables = {
        table: TableLoad(
            table,
            sum(ld.rows.get(table, 0) for ld in loaders),
            sum(ld.copy_seconds.get(table, 0.0) for ld in loaders),
            # Only a streamed COPY waits for the generator while it is open.
            sum(ld.idle_seconds for ld in loaders if ld.tables == (table,)),
        )
        for table in SEED_TABLES
    }
    return SeedReport(
        spec,
        tables,
        seconds,
        analyze_seconds,
        len(loaders),
        tuple(loader.index_seconds for loader in loaders),
        tuple(loader.idle_seconds for loader in loaders),
    )
