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

import numpy as np
import numpy.typing as npt
import psycopg
import pyarrow as pa
from psycopg.rows import scalar_row

from ledger_assets.lib.cdc import slot as slots
from ledger_assets.lib.cdc.changelog import (
    PENDING_SCHEMA,
    BatchRef,
    BatchWriter,
    ColumnSpec,
    Manifest,
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
from ledger_assets.lib.cdc.tuples import I64, LSN_BYTES, U8
from ledger_assets.lib.logs import get_logger
from ledger_assets.lib.sor.catalog import MIRRORED_TABLES, SCHEMA, MirroredTable

log = get_logger(__name__)

#: Each message comes framed by its LSN (int8send: 8 bytes, big-endian), so a fetched chunk is
#: one buffer that is hashed as it is (the batch digest covers every LSN and message) and
#: parsed with array arithmetic, with no Python object per message.
_PEEK = (
    "select int8send((lsn - '0/0'::pg_lsn)::int8) || data"
    " from pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, %s,"
    " 'proto_version', '1', 'publication_names', %s)"
)
_INSERT, _UPDATE, _DELETE, _TRUNCATE, _COMMIT = (ord(tag) for tag in "IUDTC")
#: The change log's op by pgoutput tag: an index into _OP_NAMES.
_OP_NAMES: Final = pa.array(["insert", "update", "delete", "truncate"], pa.string())
_OP_INDEX = np.zeros(256, np.int8)
_OP_INDEX[[_INSERT, _UPDATE, _DELETE, _TRUNCATE]] = [0, 1, 2, 3]


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
    #: Wall-clock bound of one read, checked once per fetch: a read past it ends at the
    #: fetch's first commit (a transaction is never split).
    max_seconds: float = 60.0
    #: Server hard stop for one peek call (statement_timeout), against a runaway decode.
    statement_timeout_s: float = 600.0
    #: Messages fetched per round trip from the server-side cursor over the peek, and decoded
    #: together as one chunk.
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
        with self._peek(manifest.end, None) as chunks:
            for frames in chunks:
                digest.update(b"".join(frames))
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
    def _peek(self, upto: Lsn, limit: int | None) -> Iterator[Iterator[list[bytes]]]:
        """Stream the slot's changes up to ``upto`` through a server-side cursor, as frames.

        The peek function materialises its result on the server (spilling to a temp file past
        work_mem); the named cursor then hands it over ``fetch_rows`` frames at a time, so the
        client never holds more than one fetch of raw messages.
        """
        conn = self.conn
        with conn.transaction():
            conn.execute(
                "select set_config('statement_timeout', %s, true)",
                (f"{int(self.config.statement_timeout_s * 1000)}ms",),
            )
            with conn.cursor(name="ledger_cdc_peek", binary=True, row_factory=scalar_row) as cur:
                cur.execute(
                    _PEEK, (self.config.slot_name, str(upto), limit, self.config.publication)
                )

                def chunks() -> Iterator[list[bytes]]:
                    while frames := cur.fetchmany(self.config.fetch_rows):
                        yield frames

                yield chunks()

    def _read_into(
        self, writer: BatchWriter, upto: Lsn
    ) -> tuple[_Read, list[str], list[str], list[tuple[str, str]]]:
        """Decode one bounded read into ``writer``; stop only at a commit."""
        config = self.config
        read = _Read(digest=hashlib.sha256())
        decoder = _Decoder(config, self.state.relations, writer, read)
        deadline = time.monotonic() + config.max_seconds
        with self._peek(upto, config.max_changes) as chunks:
            for frames in chunks:
                chunk = _Chunk.of(frames)
                stop = len(frames)
                if time.monotonic() >= deadline:
                    # Past the time bound: end at the chunk's first commit (checked once per
                    # fetch; a transaction is never split).
                    commits = np.flatnonzero(chunk.tags == _COMMIT)
                    if len(commits):
                        stop = int(commits[0]) + 1
                        read.stopped_early = True
                decoder.feed(chunk, stop)
                read.rows_seen += stop
                read.digest.update(memoryview(chunk.raw)[: chunk.offsets[stop]])
                if read.stopped_early:
                    break
        if decoder.in_transaction:
            raise DecodeError("the peek ended inside a transaction")
        return read, decoder.schema_changes, decoder.truncated, decoder.added_columns


@dataclass(frozen=True)
class _Chunk:
    """One fetch of frames (tuples.py: 8-byte LSN, then the message), as one buffer."""

    raw: bytes
    buffer: U8
    #: ``len + 1`` offsets of the frames in ``raw``.
    offsets: I64
    #: Every frame's pgoutput message type byte.
    tags: U8
    frames: pa.LargeBinaryArray

    @classmethod
    def of(cls, frames: list[bytes]) -> _Chunk:
        raw = b"".join(frames)
        sizes = np.fromiter(map(len, frames), np.int64, len(frames))
        if np.any(sizes <= LSN_BYTES):
            raise DecodeError("the peek returned an empty pgoutput message")
        offsets = np.zeros(len(frames) + 1, np.int64)
        np.cumsum(sizes, out=offsets[1:])
        buffer = np.frombuffer(raw, np.uint8)
        array = pa.LargeBinaryArray.from_buffers(
            pa.large_binary(), len(frames), [None, pa.py_buffer(offsets), pa.py_buffer(raw)]
        )
        return cls(raw, buffer, offsets, buffer[offsets[:-1] + LSN_BYTES], array)

    def message(self, index: int) -> bytes:
        return self.raw[int(self.offsets[index]) + LSN_BYTES : int(self.offsets[index + 1])]

    def words(self, rows: I64, at: int, size: int) -> npt.NDArray[np.uint64]:
        """The big-endian unsigned ``size``-byte integer at offset ``at`` of each frame."""
        raw = self.buffer[(self.offsets[rows] + at)[:, np.newaxis] + np.arange(size)]
        words: npt.NDArray[np.uint64] = raw.view(f">u{size}").ravel().astype(np.uint64)
        return words


@dataclass(frozen=True)
class _Context:
    """The transaction each message of a chunk belongs to, column-major."""

    #: Per message: the index into the arrays below (0: the transaction open before the chunk).
    index: I64
    commit_lsn: npt.NDArray[np.uint64]
    xid: npt.NDArray[np.uint32]
    commit_ts: I64
    #: Per transaction: a change's ``seq`` is ``counted - base`` (for the transaction open
    #: before the chunk, ``base`` is minus its changes in earlier chunks).
    base: I64
    #: Per message: changes before it in the chunk (an exclusive running count).
    counted: I64


class _Decoder:
    """Turns one read's pgoutput messages into change-log rows, a fetched chunk at a time.

    Only the few messages that are not row changes (Begin, Commit, Relation, Truncate, ...)
    are decoded one by one; every row change gets its transaction's commit LSN, xid, commit
    time and ``seq`` from array arithmetic over the chunk and goes to the writer still raw,
    a table at a time (tuples.py parses it when its part is flushed).
    """

    def __init__(
        self,
        config: CaptureConfig,
        known: dict[str, KnownRelation],
        writer: BatchWriter,
        read: _Read,
    ) -> None:
        self.schema = config.schema
        self.tables = {t.name: t for t in config.tables}
        self.writer = writer
        self.read = read
        self.by_oid: dict[int, TableLayout] = {}
        self.known = dict(known)
        self.schema_changes: list[str] = []
        #: (table, column) of every column added since the last known relation.
        self.added_columns: list[tuple[str, str]] = []
        self.truncated: list[str] = []
        self.in_transaction = False
        #: The open transaction: (commit_lsn, xid, commit_ts_us), and its changes so far.
        self._open = (0, 0, 0)
        self._seq = 0

    def feed(self, chunk: _Chunk, stop: int) -> None:
        """Decode the first ``stop`` messages of ``chunk``."""
        tags = chunk.tags[:stop]
        is_row = (tags == _INSERT) | (tags == _UPDATE) | (tags == _DELETE)
        weights = is_row.astype(np.int64)
        begins: list[tuple[int, Begin]] = []
        splits: list[tuple[int, Relation | Truncate]] = []
        is_open = np.zeros(stop, np.bool_)
        opened, at = self.in_transaction, 0
        for index in np.flatnonzero(~is_row).tolist():
            is_open[at:index] = opened
            at = index + 1
            message = decode(chunk.message(index))
            if isinstance(message, Begin):
                if opened:
                    raise DecodeError(f"begin of {message.final_lsn} inside a transaction")
                opened = True
                begins.append((index, message))
            elif isinstance(message, Commit):
                final = begins[-1][1].final_lsn if begins else self._open[0]
                if not opened or message.commit_lsn != final:
                    raise DecodeError(f"commit {message.commit_lsn} without its begin")
                opened = False
                self._committed(message)
            elif isinstance(message, Relation | Truncate):
                splits.append((index, message))
                if isinstance(message, Truncate):
                    weights[index] = len(message.relation_oids)
            elif isinstance(message, Insert | Update | Delete):
                raise DecodeError("row change routed to the message decoder")
            # Type, Origin and Message carry nothing the lake stores: Type only precedes a
            # Relation using a non-built-in type (which column_type rejects), Origin names
            # where a replicated change came from, and logical messages are not requested.
        is_open[at:stop] = opened
        if not np.all(is_open[is_row]):
            raise DecodeError("a row change outside a transaction")
        context = self._context(begins, weights, stop)
        low = 0
        for index, split in [*splits, (stop, None)]:
            self._rows(chunk, np.flatnonzero(is_row[low:index]) + low, context)
            if isinstance(split, Relation):
                self._relation(split)
            elif isinstance(split, Truncate):
                self._truncate(chunk, index, split, context)
            low = index + 1
        self.in_transaction = opened
        if begins:
            begin = begins[-1][1]
            self._open = (begin.final_lsn, begin.xid, begin.commit_ts_us)
        # The open transaction's changes so far, where the next chunk's count starts.
        self._seq = int(context.counted[stop] - context.base[-1])

    def _context(self, begins: list[tuple[int, Begin]], weights: I64, stop: int) -> _Context:
        counted = np.zeros(stop + 1, np.int64)
        np.cumsum(weights, out=counted[1:])
        positions = np.array([index for index, _ in begins], np.int64)
        is_begin = np.zeros(stop, np.int64)
        is_begin[positions] = 1
        self.read.changes += int(counted[stop])
        opened = [(self._open, -self._seq)] + [
            ((b.final_lsn, b.xid, b.commit_ts_us), int(counted[i])) for i, b in begins
        ]
        return _Context(
            index=np.cumsum(is_begin),
            commit_lsn=np.array([o[0][0] for o in opened], np.uint64),
            xid=np.array([o[0][1] for o in opened], np.uint32),
            commit_ts=np.array([o[0][2] for o in opened], np.int64),
            base=np.array([o[1] for o in opened], np.int64),
            counted=counted,
        )

    def _committed(self, message: Commit) -> None:
        read = self.read
        read.transactions += 1
        read.last_end = message.end_lsn
        read.first_ts = read.first_ts or message.commit_ts_us
        read.last_ts = message.commit_ts_us

    def _rows(self, chunk: _Chunk, rows: I64, context: _Context) -> None:
        """Queue the row changes at ``rows`` (chunk positions, in order) for their tables."""
        if not len(rows):
            return
        oids = chunk.words(rows, LSN_BYTES + 1, 4)
        for oid in np.unique(oids).tolist():
            mine = rows[oids == oid]
            txn = context.index[mine]
            seq = context.counted[mine] - context.base[txn]
            pending = _pending(
                context.commit_lsn[txn],
                seq,
                chunk.words(mine, 0, 8),
                context.xid[txn],
                context.commit_ts[txn],
                _OP_INDEX[chunk.tags[mine]],
                chunk.frames.take(pa.array(mine)),
            )
            self.writer.add(self._layout(int(oid)).table, pending)

    def _truncate(self, chunk: _Chunk, index: int, message: Truncate, context: _Context) -> None:
        """Queue one row without images per truncated table (they count as changes)."""
        txn = context.index[index : index + 1]
        first = context.counted[index] - context.base[txn]
        lsn = chunk.words(np.array([index]), 0, 8)
        for offset, oid in enumerate(message.relation_oids):
            layout = self._layout(oid)
            self.truncated.append(layout.table)
            pending = _pending(
                context.commit_lsn[txn],
                first + offset,
                lsn,
                context.xid[txn],
                context.commit_ts[txn],
                _OP_INDEX[np.array([_TRUNCATE], np.uint8)],
                pa.array([b""], pa.large_binary()),
            )
            self.writer.add(layout.table, pending)

    def _layout(self, oid: int) -> TableLayout:
        layout = self.by_oid.get(oid)
        if layout is None:
            raise DecodeError(f"change for relation oid {oid} before its Relation message")
        return layout

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


def _pending(
    commit_lsn: npt.NDArray[np.uint64],
    seq: I64,
    lsn: npt.NDArray[np.uint64],
    xid: npt.NDArray[np.uint32],
    commit_ts: I64,
    op: npt.NDArray[np.int8],
    frames: pa.Array,
) -> pa.RecordBatch:
    """Change-log rows waiting for their part's flush (changelog.PENDING_SCHEMA)."""
    arrays = [
        pa.array(commit_lsn, pa.uint64()),
        pa.array(seq.astype(np.uint32), pa.uint32()),
        pa.array(lsn, pa.uint64()),
        pa.array(xid, pa.uint32()),
        pa.array(commit_ts, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        _OP_NAMES.take(pa.array(op)),
        frames,
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=PENDING_SCHEMA)


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
