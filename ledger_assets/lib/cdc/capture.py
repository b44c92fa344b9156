"""The capture loop: read a bounded range of the slot, land it durably, then confirm it.

One batch is::

    validate   slot vs. state vs. manifests (fail closed on any disagreement)
    read       pg_logical_slot_peek_binary_changes(slot, upto_lsn, upto_nchanges, ...)
               upto_lsn = pg_current_wal_flush_lsn() taken when the read starts
    decode     pgoutput v1 -> rows, streamed into per-table Parquet temp files
    land       data files fsync'd + renamed, then the manifest (the commit marker)
    confirm    pg_replication_slot_advance(slot, end), then _state.json

Peek never consumes, so a crash before ``confirm`` leaves the slot where it was and the next
start re-reads the same range. If the manifest had landed, that re-read is checked against
the manifest's digest of the raw stream and the batch is confirmed without being rewritten;
if it had not, the same range produces the same file names and the leftovers are replaced.
Only whole committed transactions are ever landed: pgoutput emits a transaction at its commit,
and a read stops only at a commit.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import psycopg

from ledger_assets.lib.cdc import slot as slots
from ledger_assets.lib.cdc.changelog import (
    BatchRef,
    BatchWriter,
    ColumnSpec,
    Manifest,
    PendingRow,
    TableLayout,
    list_batches,
    remove_unlanded_files,
)
from ledger_assets.lib.cdc.errors import (
    CaptureBusyError,
    ChangeLogCorruptError,
    DecodeError,
    PositionMismatchError,
    SlotLostError,
    SlotRecreatedError,
    UnsupportedSchemaChangeError,
)
from ledger_assets.lib.cdc.lsn import Lsn
from ledger_assets.lib.cdc.pgoutput import (
    Begin,
    Commit,
    Delete,
    Insert,
    Relation,
    Truncate,
    Update,
    decode,
)
from ledger_assets.lib.cdc.pgtypes import SESSION_SETTINGS
from ledger_assets.lib.cdc.state import (
    STATE_FORMAT,
    CaptureState,
    KnownRelation,
    read_state,
    write_state,
)
from ledger_assets.lib.logs import get_logger
from ledger_assets.lib.sor.catalog import MIRRORED_TABLES, SCHEMA, MirroredTable

log = get_logger(__name__)

_PEEK = (
    "select (lsn - '0/0'::pg_lsn)::int8, data"
    " from pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, %s,"
    " 'proto_version', '1', 'publication_names', %s)"
)
#: pgoutput tags of row changes. They skip the Python decoder: tuples.py parses them a whole
#: table part at a time when the part is flushed.
_ROW_OPS: Final = {ord("I"): "insert", ord("U"): "update", ord("D"): "delete"}


@dataclass(frozen=True)
class CaptureConfig:
    """Where to capture from and to, and how big one batch may get."""

    dsn: str
    #: The lake's change-log folder (by convention ``<lake root>/_changelog``).
    changelog_dir: Path
    slot_name: str
    publication: str
    tables: tuple[MirroredTable, ...] = MIRRORED_TABLES
    schema: str = SCHEMA
    #: ``upto_nchanges`` of one read. pgoutput rows, not changes (Begin/Commit/Relation count
    #: too), and never splits a transaction. Each peek re-decodes from the slot's restart_lsn,
    #: so few large reads beat many small ones (performance-facts.md 1.4).
    max_changes: int = 1_000_000
    #: Wall-clock bound of one read, checked at each commit (a transaction is never split).
    max_seconds: float = 60.0
    #: Server hard stop for one peek call (statement_timeout), against a runaway decode.
    statement_timeout_s: float = 600.0
    #: Rows fetched per round trip from the server-side cursor over the peek.
    fetch_rows: int = 20_000
    #: Rows per Parquet row group (and the most rows per table held in memory).
    rows_per_flush: int = 100_000
    #: With nothing published in the WAL, still confirm the slot (through an empty batch)
    #: once it retains this many bytes, so a quiet database does not pin WAL forever.
    idle_advance_bytes: int = 16 << 20


@dataclass(frozen=True)
class BatchResult:
    """A batch that is landed and confirmed."""

    manifest: Manifest
    elapsed_s: float


@dataclass(frozen=True)
class CaptureHealth:
    """Facts a sensor or asset check turns into alerts."""

    slot: slots.SlotInfo | None
    state: CaptureState | None

    @property
    def landed_lsn(self) -> Lsn | None:
        return None if self.state is None else self.state.landed

    @property
    def seconds_since_landed(self) -> float | None:
        """Seconds since the last confirmed batch, None before the first one."""
        if self.state is None or self.state.landed_at is None:
            return None
        landed_at = datetime.fromisoformat(self.state.landed_at)
        return (datetime.now(UTC) - landed_at).total_seconds()

    @property
    def problems(self) -> list[str]:
        """Conditions that stop capture outright (alert at error severity)."""
        if self.slot is None:
            return ["replication slot is missing"]
        found: list[str] = []
        if self.slot.wal_status == "lost":
            found.append("replication slot lost required WAL (wal_status=lost)")
        if self.state is None:
            found.append("change log has no capture state")
        return found


def capture_health(config: CaptureConfig) -> CaptureHealth:
    """Slot health and the stored position, without taking the capture lock."""
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        info = slots.read_slot(conn, config.slot_name)
    return CaptureHealth(info, read_state(config.changelog_dir))


def reset_capture(config: CaptureConfig) -> Path | None:
    """The first step of a re-snapshot: drop the slot and set the old change log aside.

    The old folder is renamed (never deleted) to ``<folder>.reset-<UTC time>`` so that what it
    held stays available for forensics. Start again with :meth:`ChangeCapture.start` or
    :meth:`ChangeCapture.start_with_snapshot` and re-seed the lake from that point.

    Returns:
        Where the old change log went, or None when there was none.
    """
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        slots.drop_slot(conn, config.slot_name)
    folder = config.changelog_dir
    if not folder.exists():
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    archived = folder.with_name(f"{folder.name}.reset-{stamp}")
    os.replace(folder, archived)
    return archived


@dataclass
class _Read:
    """What one pass over the peek produced."""

    digest: Any
    transactions: int = 0
    changes: int = 0
    rows_seen: int = 0
    last_end: Lsn | None = None
    first_ts: int | None = None
    last_ts: int | None = None
    stopped_early: bool = False


class ChangeCapture:
    """Captures the publication's changes from the slot into the change log.

    Use as a context manager; it holds one connection and a session advisory lock on the slot
    name, so two captures of one slot cannot interleave::

        with ChangeCapture(config) as capture:
            capture.start()
            results = capture.run()
    """

    def __init__(self, config: CaptureConfig) -> None:
        self.config = config
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._state: CaptureState | None = None

    # ------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> Self:
        conn = psycopg.connect(self.config.dsn, autocommit=True)
        try:
            for name, value in SESSION_SETTINGS.items():
                conn.execute("select set_config(%s, %s, false)", (name, value))
            row = conn.execute(
                "select pg_try_advisory_lock(hashtext(%s))",
                (f"ledger-cdc:{self.config.slot_name}",),
            ).fetchone()
            if row is None or not row[0]:
                raise CaptureBusyError(f"another capture holds slot {self.config.slot_name}")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self.config.changelog_dir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None:
            raise RuntimeError("ChangeCapture is used outside its `with` block")
        return self._conn

    @property
    def state(self) -> CaptureState:
        if self._state is None:
            raise RuntimeError("call start() first")
        return self._state

    def start(self) -> CaptureState:
        """Create what is missing, check what exists, finish an interrupted batch.

        On the very first start (no state, no slot) this creates the publication and the
        slot; the change log then begins at the slot's consistent point, which is only right
        for an empty lake. To seed a lake from existing rows use :meth:`start_with_snapshot`.

        Raises:
            FailClosedError: (a subclass) whenever the slot and the change log disagree.
        """
        config = self.config
        slots.ensure_publication(
            self.conn, config.publication, config.schema, [t.name for t in config.tables]
        )
        state = read_state(config.changelog_dir)
        if state is None:
            self._refuse_unknown_history()
            origin = slots.create_slot(self.conn, config.slot_name)
            state = self._initial_state(origin)
            write_state(config.changelog_dir, state)
            log.info("cdc.slot_created", slot=config.slot_name, origin=str(origin))
        self._state = state
        self._check_and_recover()
        return self.state

    @contextmanager
    def start_with_snapshot(self) -> Iterator[slots.SlotSnapshot]:
        """Create the slot with an exported snapshot, for seeding the lake at the seam.

        Inside the ``with`` block, copy the tables in a REPEATABLE READ transaction that runs
        ``SET TRANSACTION SNAPSHOT <snapshot_name>``: the copy then holds exactly the changes
        committed before ``consistent_lsn`` and the change log exactly those after it.

        Raises:
            SlotRecreatedError: when a slot or a change log already exists (reset first).
        """
        config = self.config
        slots.ensure_publication(
            self.conn, config.publication, config.schema, [t.name for t in config.tables]
        )
        if read_state(config.changelog_dir) is not None:
            raise SlotRecreatedError(
                f"change log {config.changelog_dir} already has a capture state; refusing to"
                " start a second history in it"
            )
        self._refuse_unknown_history()
        with slots.exported_snapshot_slot(config.dsn, config.slot_name) as snap:
            state = self._initial_state(snap.consistent_lsn)
            write_state(config.changelog_dir, state)
            self._state = state
            yield snap

    def _refuse_unknown_history(self) -> None:
        config = self.config
        if list_batches(config.changelog_dir):
            raise ChangeLogCorruptError(
                f"change log {config.changelog_dir} holds batches but no {STATE_FORMAT} state"
            )
        if slots.read_slot(self.conn, config.slot_name) is not None:
            raise SlotRecreatedError(
                f"slot {config.slot_name} exists but change log {config.changelog_dir} has no"
                " state, so what the slot already confirmed is unknown"
            )

    def _initial_state(self, origin: Lsn) -> CaptureState:
        info = self.conn.info
        return CaptureState(
            format=STATE_FORMAT,
            slot_name=self.config.slot_name,
            publication=self.config.publication,
            system_identifier=slots.system_identifier(self.conn),
            database=info.dbname,
            origin_lsn=str(origin),
            created_at=datetime.now(UTC).isoformat(),
            landed_lsn=str(origin),
            landed_at=None,
            restart_lsn_seen=str(Lsn(0)),
            relations={},
        )

    # ------------------------------------------------------------------------ validation

    def _check_and_recover(self) -> Lsn:
        """Compare slot, state and manifests; confirm landed-but-unconfirmed batches.

        Returns:
            The slot's confirmed position, where the next read starts.
        """
        config, state = self.config, self.state
        info = slots.read_slot(self.conn, config.slot_name)
        name = config.slot_name
        if info is None:
            raise SlotLostError(
                f"replication slot {name} does not exist (dropped or never created)"
            )
        if info.wal_status == "lost" or info.confirmed_flush_lsn is None:
            raise SlotLostError(
                f"replication slot {name} was invalidated: WAL it needs was removed"
            )
        if info.slot_type != "logical" or info.plugin != slots.PLUGIN:
            raise SlotRecreatedError(f"slot {name} is {info.slot_type}/{info.plugin}, not pgoutput")
        if info.database != state.database or info.database != self.conn.info.dbname:
            raise SlotRecreatedError(f"slot {name} belongs to database {info.database}")
        if slots.system_identifier(self.conn) != state.system_identifier:
            raise SlotRecreatedError(
                f"slot {name} is on another cluster than the change log was built from"
                f" (system identifier differs from {state.system_identifier})"
            )
        assert info.restart_lsn is not None  # only NULL when invalidated, handled above
        confirmed = info.confirmed_flush_lsn
        newer = _chain(list_batches(config.changelog_dir, after=state.landed))
        if newer and newer[0].start != state.landed:
            raise ChangeLogCorruptError(
                f"change log's first batch after the stored position {state.landed} starts at"
                f" {newer[0].start}"
            )
        landed = newer[-1].end if newer else state.landed
        if confirmed > landed:
            raise SlotRecreatedError(
                f"slot {name} confirmed_flush_lsn {confirmed} is ahead of the change log"
                f" ({landed}): it was recreated or consumed outside this capture, and the"
                " changes in between may be missing from the lake"
            )
        unconfirmed = _chain(list_batches(config.changelog_dir, after=confirmed))
        if confirmed < landed and (not unconfirmed or unconfirmed[0].start != confirmed):
            raise PositionMismatchError(
                f"slot {name} confirmed_flush_lsn {confirmed} is behind the change log"
                f" ({landed}) and no landed batch starts there to verify it against"
            )
        if info.restart_lsn < state.restart_seen and not unconfirmed:
            # A slot rolled back by a Postgres crash also rolls back its confirmed position
            # (both are saved at checkpoints), which the verification below covers.
            raise SlotRecreatedError(
                f"slot {name} restart_lsn {info.restart_lsn} is behind the {state.restart_seen}"
                " seen before: the slot was recreated or restored"
            )
        for ref in unconfirmed:
            # Landed by a run that died before confirming it, or confirmed but rolled back by
            # a Postgres crash before the slot was checkpointed: re-read it and compare.
            manifest = ref.read()
            self._verify_landed(manifest)
            self._confirm(manifest)
            log.warning("cdc.batch_recovered", batch=manifest.name)
        if not unconfirmed and (state.landed != landed or info.restart_lsn != state.restart_seen):
            self._save_state(landed, info.restart_lsn)
        remove_unlanded_files(config.changelog_dir, landed)
        return landed

    def _verify_landed(self, manifest: Manifest) -> None:
        digest = hashlib.sha256()
        with self._peek(manifest.end, None) as rows:
            for lsn, data in rows:
                digest.update(lsn.to_bytes(8, "big"))
                digest.update(data)
        if digest.hexdigest() != manifest.source_digest:
            raise PositionMismatchError(
                f"batch {manifest.name} re-read from slot {self.config.slot_name} differs from"
                " the landed one: the slot's history is not the change log's"
            )

    # ----------------------------------------------------------------------------- batch

    def run(
        self, max_batches: int | None = None, max_seconds: float | None = None
    ) -> list[BatchResult]:
        """Capture batches until caught up with the WAL flushed when each read began.

        Args:
            max_batches: stop after this many batches.
            max_seconds: stop starting new batches after this long.
        """
        results: list[BatchResult] = []
        started = time.monotonic()
        while max_batches is None or len(results) < max_batches:
            if max_seconds is not None and time.monotonic() - started >= max_seconds:
                break
            result, drained = self._capture_batch()
            if result is not None:
                results.append(result)
            if drained:
                break
        return results

    def capture_batch(self) -> BatchResult | None:
        """Read, land and confirm one bounded batch; None when there was nothing to land."""
        result, _ = self._capture_batch()
        return result

    def _capture_batch(self) -> tuple[BatchResult | None, bool]:
        began = time.monotonic()
        start = self._check_and_recover()
        upto = slots.current_flush_lsn(self.conn)
        if upto <= start:
            return None, True
        writer = BatchWriter(self.config.changelog_dir, start, self.config.rows_per_flush)
        try:
            read, schema_changes, truncated, added = self._read_into(writer, upto)
            _refuse_filled_added_columns(self.conn, self.config.schema, added)
            drained = not read.stopped_early and read.rows_seen < self.config.max_changes
            end = max(upto, read.last_end or upto) if drained else read.last_end
            assert end is not None  # a read that stopped early stopped at a commit
            if read.transactions == 0 and end - start < self.config.idle_advance_bytes:
                writer.abort()
                return None, drained
            manifest = writer.land(
                end,
                {
                    "slot": self.config.slot_name,
                    "publication": self.config.publication,
                    "source_digest": read.digest.hexdigest(),
                    "transactions": read.transactions,
                    "changes": read.changes,
                    "first_commit_ts_us": read.first_ts,
                    "last_commit_ts_us": read.last_ts,
                    "truncated_tables": tuple(truncated),
                    "schema_changes": tuple(schema_changes),
                },
            )
        except BaseException:
            writer.abort()
            raise
        self._confirm(manifest)
        elapsed = time.monotonic() - began
        log.info(
            "cdc.batch_landed",
            batch=manifest.name,
            transactions=manifest.transactions,
            changes=manifest.changes,
            seconds=round(elapsed, 3),
        )
        return BatchResult(manifest, elapsed_s=elapsed), drained

    def _confirm(self, manifest: Manifest) -> None:
        """Advance the slot to the landed batch's end, then record it in the state."""
        reached = slots.advance_slot(self.conn, self.config.slot_name, manifest.end)
        if reached != manifest.end:
            raise PositionMismatchError(
                f"slot {self.config.slot_name} advanced to {reached}, not {manifest.end}"
            )
        relations = dict(self.state.relations)
        for change_file in manifest.files:
            relations[change_file.table] = KnownRelation(
                change_file.relation_oid, change_file.columns
            )
        info = slots.read_slot(self.conn, self.config.slot_name)
        restart = info.restart_lsn if info is not None and info.restart_lsn is not None else None
        self._state = self.state.advanced(
            manifest.end, datetime.now(UTC), restart or self.state.restart_seen, relations
        )
        write_state(self.config.changelog_dir, self._state)

    def _save_state(self, landed: Lsn, restart: Lsn) -> None:
        at = (
            datetime.now(UTC)
            if self.state.landed_at is None
            else datetime.fromisoformat(self.state.landed_at)
        )
        self._state = self.state.advanced(landed, at, restart, dict(self.state.relations))
        write_state(self.config.changelog_dir, self._state)

    @contextmanager
    def _peek(self, upto: Lsn, limit: int | None) -> Iterator[Iterator[tuple[int, bytes]]]:
        """Stream the slot's changes up to ``upto`` through a server-side cursor.

        The peek function materialises its result on the server (spilling to a temp file past
        work_mem); the named cursor then hands it over ``fetch_rows`` at a time, so the client
        never holds more than one fetch of raw messages.
        """
        conn = self.conn
        with conn.transaction():
            conn.execute(
                "select set_config('statement_timeout', %s, true)",
                (f"{int(self.config.statement_timeout_s * 1000)}ms",),
            )
            with conn.cursor(name="ledger_cdc_peek", binary=True) as cur:
                cur.execute(
                    _PEEK, (self.config.slot_name, str(upto), limit, self.config.publication)
                )

                def rows() -> Iterator[tuple[int, bytes]]:
                    while batch := cur.fetchmany(self.config.fetch_rows):
                        yield from batch

                yield rows()

    def _read_into(
        self, writer: BatchWriter, upto: Lsn
    ) -> tuple[_Read, list[str], list[str], list[tuple[str, str]]]:
        """Decode one bounded read into ``writer``; stop only at a commit."""
        config = self.config
        read = _Read(digest=hashlib.sha256())
        decoder = _Decoder(config, self.state.relations, writer)
        deadline = time.monotonic() + config.max_seconds
        with self._peek(upto, config.max_changes) as rows:
            for lsn, data in rows:
                read.rows_seen += 1
                read.digest.update(lsn.to_bytes(8, "big"))
                read.digest.update(data)
                op = _ROW_OPS.get(data[0])
                if op is not None:
                    decoder.row(lsn, op, data)
                    continue
                message = decode(data)
                if isinstance(message, Commit):
                    decoder.commit(message)
                    read.transactions += 1
                    read.changes = decoder.changes
                    read.last_end = message.end_lsn
                    read.first_ts = read.first_ts or message.commit_ts_us
                    read.last_ts = message.commit_ts_us
                    if time.monotonic() >= deadline:
                        read.stopped_early = True
                        break
                else:
                    decoder.feed(lsn, message)
        if decoder.in_transaction:
            raise DecodeError("the peek ended inside a transaction")
        return read, decoder.schema_changes, decoder.truncated, decoder.added_columns


class _Decoder:
    """Turns one read's pgoutput messages into change-log rows."""

    def __init__(
        self,
        config: CaptureConfig,
        known: dict[str, KnownRelation],
        writer: BatchWriter,
    ) -> None:
        self.schema = config.schema
        self.tables = {t.name: t for t in config.tables}
        self.writer = writer
        self.by_oid: dict[int, TableLayout] = {}
        self.known = dict(known)
        self.schema_changes: list[str] = []
        #: (table, column) of every column added since the last known relation.
        self.added_columns: list[tuple[str, str]] = []
        self.truncated: list[str] = []
        self.changes = 0
        self.in_transaction = False
        self._commit_lsn = 0
        self._xid = 0
        self._ts = 0
        self._seq = 0

    def commit(self, message: Commit) -> None:
        if not self.in_transaction or message.commit_lsn != self._commit_lsn:
            raise DecodeError(f"commit {message.commit_lsn} without its begin")
        self.in_transaction = False

    def row(self, lsn: int, op: str, data: bytes) -> None:
        """An Insert, Update or Delete, kept raw until its table part is flushed."""
        layout = self._layout(int.from_bytes(data[1:5], "big"))
        self._add(layout, lsn, op, data)

    def feed(self, lsn: int, message: object) -> None:
        if isinstance(message, Begin):
            self.in_transaction = True
            self._commit_lsn, self._xid = message.final_lsn, message.xid
            self._ts = message.commit_ts_us
            self._seq = 0
        elif isinstance(message, Relation):
            self._relation(message)
        elif isinstance(message, Truncate):
            for oid in message.relation_oids:
                layout = self._layout(oid)
                self.truncated.append(layout.table)
                self._add(layout, lsn, "truncate", None)
        elif isinstance(message, Insert | Update | Delete):
            raise DecodeError("row change routed to the message decoder")
        # Type, Origin and Message carry nothing the lake stores: Type only precedes a
        # Relation using a non-built-in type (which column_type rejects), Origin names where
        # a replicated change came from, and logical messages are not requested.

    def _layout(self, oid: int) -> TableLayout:
        layout = self.by_oid.get(oid)
        if layout is None:
            raise DecodeError(f"change for relation oid {oid} before its Relation message")
        return layout

    def _add(self, layout: TableLayout, lsn: int, op: str, data: bytes | None) -> None:
        row: PendingRow = (self._commit_lsn, self._seq, lsn, self._xid, self._ts, op, data)
        self.writer.add(layout.table, row)
        self._seq += 1
        self.changes += 1

    def _relation(self, relation: Relation) -> None:
        table = self.tables.get(relation.name)
        if relation.namespace != self.schema or table is None:
            raise DecodeError(
                f"relation {relation.namespace}.{relation.name} is published but not mirrored"
            )
        if relation.replica_identity != "f":
            raise UnsupportedSchemaChangeError(
                f"{relation.name} has replica identity {relation.replica_identity!r}, not FULL:"
                " deletes and partition moves would lose the old row"
            )
        layout = TableLayout.build(relation, table.primary_key)
        specs = layout.column_specs()
        known = self.known.get(relation.name)
        if known is not None:
            added = _compare_relation(relation.name, known, relation.oid, specs)
            if added:
                self.schema_changes.append(f"{relation.name}: added {', '.join(added)}")
                self.added_columns += [(relation.name, column) for column in added]
        current = self.writer.layout_of(relation.name)
        if current is None or current.relation.columns != relation.columns:
            self.writer.set_layout(layout)
        else:
            layout = current
        self.by_oid[relation.oid] = layout
        self.known[relation.name] = KnownRelation(relation.oid, specs)


def _refuse_filled_added_columns(
    conn: psycopg.Connection[tuple[object, ...]], schema: str, added: list[tuple[str, str]]
) -> None:
    """Fail closed on an added column that rows older than the add may hold a value in.

    ``ADD COLUMN ... DEFAULT`` gives every existing row the default (stored as the column's
    "missing" value, or written by a table rewrite for a volatile default) without one change
    in the stream, so those rows' lake copies would read NULL where Postgres has a value. A
    column added without a default reads NULL in both, and the lake follows it. The catalog is
    read now, not at the add: a default set later makes this refuse too, which is the safe side.

    Raises:
        UnsupportedSchemaChangeError: naming the column and the re-snapshot path.
    """
    for table, column in added:
        filled = conn.execute(
            "select a.atthasdef or a.atthasmissing from pg_attribute a "
            "join pg_class c on c.oid = a.attrelid "
            "join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = %s and c.relname = %s and a.attname = %s and not a.attisdropped",
            (schema, table, column),
        ).fetchone()
        if filled is not None and filled[0]:
            raise UnsupportedSchemaChangeError(
                f"{table}.{column} was added with a default: rows that existed before hold it"
                " in Postgres with no change in the stream; re-snapshot the lake (see"
                " ledger_assets.lib.cdc, 'Re-snapshot')"
            )


def _chain(refs: list[BatchRef]) -> list[BatchRef]:
    """Check landed batches form one contiguous chain; return them.

    Raises:
        ChangeLogCorruptError: on a gap or an overlap.
    """
    for previous, current in itertools.pairwise(refs):
        if current.start != previous.end:
            raise ChangeLogCorruptError(
                f"change log has a gap or overlap between batches ending {previous.end}"
                f" and starting {current.start}"
            )
    return refs


def _compare_relation(
    table: str, known: KnownRelation, oid: int, specs: tuple[ColumnSpec, ...]
) -> list[str]:
    """Added column names; fail closed on anything the lake cannot follow.

    Raises:
        UnsupportedSchemaChangeError: on a recreated table or a dropped, renamed or retyped column.
    """
    if oid != known.oid:
        raise UnsupportedSchemaChangeError(
            f"{table} was dropped and recreated (relation oid {known.oid} -> {oid}); rows it"
            " held before are not in the change stream"
        )
    now = {c.name: c for c in specs}
    for column in known.columns:
        current = now.get(column.name)
        if current is None:
            raise UnsupportedSchemaChangeError(f"{table}.{column.name} was dropped or renamed")
        if (current.type_oid, current.typmod) != (column.type_oid, column.typmod):
            raise UnsupportedSchemaChangeError(
                f"{table}.{column.name} changed type from {column.pg_type} to {current.pg_type}"
            )
    before = {c.name for c in known.columns}
    return [c.name for c in specs if c.name not in before]
