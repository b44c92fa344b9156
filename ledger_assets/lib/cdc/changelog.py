"""The change log: durable, typed, deterministic files of captured changes.

Layout under the change-log folder (``<lake root>/_changelog`` by convention)::

    _state.json                                  capture state (see state.py)
    <start>-<end>.json                           batch manifest: the batch's commit marker
    <start>-<end>.<table>.<part>.parquet         the batch's changes to one table

``<start>`` and ``<end>`` are 16-digit hex LSNs (so names sort in LSN order): the slot position
the batch was read from and the position the slot is advanced to once the batch is durable.
Batches are contiguous: each starts where the previous one ended. A batch is landed when its
manifest exists; data files without a manifest are leftovers of a crash and are removed by the
next run. The manifest is written last, after every data file is fsync'd and renamed, so a
reader that lists manifests never sees a half-written batch. Empty batches (a manifest with no
files) record that the slot moved past WAL with nothing published in it.

Record schema (one row per change, one file per table and relation version ("part")):

============  ==========================  ============================================
column        type                        meaning
============  ==========================  ============================================
commit_lsn    uint64, not null            LSN of the transaction's commit record
seq           uint32, not null            change index within the transaction (all tables)
lsn           uint64, not null            LSN of the change's WAL record (COPY rows share)
xid           uint32, not null            transaction id
commit_ts     timestamp[us, UTC], not nul commit time
op            string, not null            insert | update | delete | truncate
key           primary-key type            new key (insert/update), old key (delete)
old_kind      string                      full | key | null: what ``old`` holds
new           struct<table columns>       the row after the change (insert, update)
old           struct<table columns>       the row before it (update, delete)
============  ==========================  ============================================

``(commit_lsn, seq)`` is a total order of all changes. Struct fields are typed by the table's
column types (see pgtypes.py) and carry ``pg_type``/``pg_type_oid``/``pg_typmod`` in their field
metadata. An unchanged TOASTed value is filled from the old row (tuples.py), so a NULL
in ``new`` is always a real SQL NULL. A ``truncate`` row has null ``key``, ``new`` and ``old``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ledger_assets.lib.cdc.errors import ChangeLogCorruptError
from ledger_assets.lib.cdc.lsn import Lsn
from ledger_assets.lib.cdc.pgoutput import Relation
from ledger_assets.lib.cdc.pgtypes import ColumnType, column_type
from ledger_assets.lib.cdc.tuples import Images, binary_column, parse_rows

FORMAT: Final = "ledger-cdc-changelog/1"
#: old_kind by pgoutput's old-tuple marker byte (0: no old row): an index into _OLD_KINDS.
_OLD_KINDS: Final = pa.array(["full", "key", None], pa.string())
_OLD_KIND_INDEX = np.full(256, 2, dtype=np.int8)
_OLD_KIND_INDEX[ord("O")], _OLD_KIND_INDEX[ord("K")] = 0, 1
_MANIFEST_NAME = re.compile(r"^([0-9A-F]{16})-([0-9A-F]{16})\.json$")
_TMP_SUFFIX = ".tmp"

Op = Literal["insert", "update", "delete", "truncate"]


# ------------------------------------------------------------------------------ durable files


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's contents to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new file.

    Write a temp file, fsync it, rename it over the target, fsync the folder (the rename is
    only durable once the folder entry is).
    """
    tmp = path.with_name(f".{path.name}{_TMP_SUFFIX}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a captured relation, as recorded in the manifest."""

    name: str
    pg_type: str
    type_oid: int
    typmod: int
    is_key: bool


@dataclass(frozen=True)
class ChangeFile:
    """One data file of a batch: the changes to one table under one relation version."""

    table: str
    part: int
    #: pg_class oid of the table when captured: a new oid means dropped and recreated.
    relation_oid: int
    path: str
    rows: int
    sha256: str
    ops: dict[str, int]
    columns: tuple[ColumnSpec, ...]


@dataclass(frozen=True)
class Manifest:
    """A landed batch. Its file is the batch's commit marker."""

    format: str
    slot: str
    publication: str
    start_lsn: str
    end_lsn: str
    #: SHA-256 over the raw pgoutput stream (each message's LSN and bytes) of the batch; a
    #: re-read of the same range must reproduce it exactly.
    source_digest: str
    transactions: int
    changes: int
    first_commit_ts_us: int | None
    last_commit_ts_us: int | None
    files: tuple[ChangeFile, ...]
    #: Tables a TRUNCATE emptied in this batch, in order of appearance.
    truncated_tables: tuple[str, ...] = ()
    #: Human-readable notes on relation changes seen in this batch (added columns).
    schema_changes: tuple[str, ...] = ()

    @property
    def start(self) -> Lsn:
        return Lsn.parse(self.start_lsn)

    @property
    def end(self) -> Lsn:
        return Lsn.parse(self.end_lsn)

    @property
    def name(self) -> str:
        return batch_name(self.start, self.end)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        raw: dict[str, Any] = json.loads(data)
        files = tuple(
            ChangeFile(
                **{k: v for k, v in f.items() if k != "columns"},
                columns=tuple(ColumnSpec(**c) for c in f["columns"]),
            )
            for f in raw.pop("files")
        )
        raw["truncated_tables"] = tuple(raw.get("truncated_tables", ()))
        raw["schema_changes"] = tuple(raw.get("schema_changes", ()))
        return cls(files=files, **raw)


def batch_name(start: Lsn, end: Lsn) -> str:
    """The deterministic stem of a batch's files."""
    return f"{start.hex16}-{end.hex16}"


def data_file_name(start: Lsn, end: Lsn, table: str, part: int) -> str:
    return f"{batch_name(start, end)}.{table}.{part:03d}.parquet"


@dataclass(frozen=True)
class BatchRef:
    """A manifest found on disk."""

    start: Lsn
    end: Lsn
    path: Path

    def read(self) -> Manifest:
        """Load the manifest.

        Raises:
            ChangeLogCorruptError: if it cannot be parsed or its range disagrees with its name.
        """
        try:
            manifest = Manifest.from_json(self.path.read_bytes())
        except (ValueError, KeyError, TypeError) as exc:
            raise ChangeLogCorruptError(
                f"change-log manifest {self.path} is unreadable: {exc}"
            ) from exc
        if manifest.format != FORMAT or (manifest.start, manifest.end) != (self.start, self.end):
            raise ChangeLogCorruptError(f"change-log manifest {self.path} disagrees with its name")
        return manifest


def list_batches(folder: Path, after: Lsn | None = None) -> list[BatchRef]:
    """Landed batches in LSN order, optionally only those ending after ``after``.

    File names sort in LSN order, so the apply side can also page through them by name.
    """
    refs: list[BatchRef] = []
    if not folder.exists():
        return refs
    for entry in os.scandir(folder):
        match = _MANIFEST_NAME.match(entry.name)
        if match is None:
            continue
        ref = BatchRef(Lsn.from_hex16(match[1]), Lsn.from_hex16(match[2]), Path(entry.path))
        if after is None or ref.end > after:
            refs.append(ref)
    refs.sort(key=lambda r: (r.start, r.end))
    return refs


def remove_unlanded_files(folder: Path, landed_end: Lsn) -> list[Path]:
    """Delete temp files and data files of batches that have no manifest.

    Only files whose batch starts at or after ``landed_end`` are candidates: anything earlier
    belongs to confirmed history, which is the apply side's to prune.
    """
    manifests = {ref.path.stem for ref in list_batches(folder)}
    removed: list[Path] = []
    for entry in os.scandir(folder):
        name = entry.name
        stale = name.endswith(_TMP_SUFFIX)
        if name.endswith(".parquet") and not stale:
            stem = name.split(".", 1)[0]
            start = _start_of(stem)
            stale = start is not None and start >= landed_end and stem not in manifests
        if stale:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    if removed:
        fsync_path(folder)
    return removed


@dataclass(frozen=True)
class PruneReport:
    batches: int
    files: int
    bytes: int


def prune_batches(folder: Path, upto: Lsn) -> PruneReport:
    """Delete every landed batch that ends at or before ``upto``, and their data files.

    The caller picks ``upto`` no later than every reader's position (the lake's watermark and
    reconciliation's last one): capture itself only reads batches after the slot's confirmed
    position. Each batch's manifest goes first, so a crash midway leaves only data files with
    no manifest, which the next prune removes (they sort before ``upto``).
    """
    batches = files = size = 0
    for ref in list_batches(folder):
        if ref.end <= upto:
            os.unlink(ref.path)
            batches += 1
    for entry in os.scandir(folder):
        if not entry.name.endswith(".parquet"):
            continue
        stem = entry.name.split(".", 1)[0]
        end = _end_of(stem)
        if end is not None and end <= upto:
            size += entry.stat().st_size
            os.unlink(entry.path)
            files += 1
    if batches or files:
        fsync_path(folder)
    return PruneReport(batches, files, size)


def prunable_end(
    folder: Path, readers: Iterable[Lsn | None], keep_seconds: float, now: float
) -> Lsn | None:
    """How far the change log may be pruned: no further than any reader's position (a None
    reader has not started and needs nothing), and keeping every batch landed in the last
    ``keep_seconds`` (recent history, for audits and for re-checking what CDC carried).
    None: nothing may be pruned."""
    old = [ref.end for ref in list_batches(folder) if ref.path.stat().st_mtime < now - keep_seconds]
    if not old:
        return None
    return min([max(old), *(r for r in readers if r is not None)])


def _end_of(stem: str) -> Lsn | None:
    _, _, tail = stem.partition("-")
    try:
        return Lsn.from_hex16(tail)
    except ValueError:
        return None


def _start_of(stem: str) -> Lsn | None:
    head = stem.split("-", 1)[0]
    try:
        return Lsn.from_hex16(head)
    except ValueError:
        return None


# ------------------------------------------------------------------------------------ schema

#: Columns every change-log data file starts with.
META_FIELDS: Final = (
    pa.field("commit_lsn", pa.uint64(), nullable=False),
    pa.field("seq", pa.uint32(), nullable=False),
    pa.field("lsn", pa.uint64(), nullable=False),
    pa.field("xid", pa.uint32(), nullable=False),
    pa.field("commit_ts", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("op", pa.string(), nullable=False),
)


#: Changes waiting to be written, as the capture hands them over: the meta columns plus
#: ``frame``, each change's raw message framed by its LSN (tuples.py), empty for a truncate.
#: Rows are parsed into typed columns a whole part at a time when the part is flushed.
PENDING_SCHEMA: Final = pa.schema([*META_FIELDS, pa.field("frame", pa.large_binary())])


@dataclass(frozen=True)
class TableLayout:
    """The typed layout of one table under one relation version."""

    table: str
    primary_key: str
    relation: Relation
    types: tuple[ColumnType, ...]
    key_index: int
    schema: pa.Schema
    struct_type: pa.StructType

    @classmethod
    def build(cls, relation: Relation, primary_key: str) -> TableLayout:
        """Derive the Arrow layout from a Relation message.

        Raises:
            UnsupportedSchemaChangeError: when a column type has no exact mapping.
            ChangeLogCorruptError: when the primary key column is not in the relation.
        """
        types = tuple(column_type(c, relation.name) for c in relation.columns)
        names = [c.name for c in relation.columns]
        if primary_key not in names:
            raise ChangeLogCorruptError(
                f"{relation.name}: primary key {primary_key!r} is not among columns {names}"
            )
        struct_fields = [
            pa.field(
                c.name,
                t.arrow,
                metadata={
                    "pg_type": t.pg_name,
                    "pg_type_oid": str(c.type_oid),
                    "pg_typmod": str(c.typmod),
                },
            )
            for c, t in zip(relation.columns, types, strict=True)
        ]
        struct_type = pa.struct(struct_fields)
        key_index = names.index(primary_key)
        schema = pa.schema(
            [
                *META_FIELDS,
                pa.field("key", types[key_index].arrow),
                pa.field("old_kind", pa.string()),
                pa.field("new", struct_type),
                pa.field("old", struct_type),
            ],
            metadata={"format": FORMAT, "table": relation.name, "primary_key": primary_key},
        )
        return cls(relation.name, primary_key, relation, types, key_index, schema, struct_type)

    def column_specs(self) -> tuple[ColumnSpec, ...]:
        return tuple(
            ColumnSpec(c.name, t.pg_name, c.type_oid, c.typmod, c.is_key)
            for c, t in zip(self.relation.columns, self.types, strict=True)
        )

    def to_record_batch(self, rows: pa.RecordBatch) -> pa.RecordBatch:
        """Turn pending rows (:data:`PENDING_SCHEMA`) into one typed record batch (vectorised,
        per column)."""
        parsed = parse_rows(rows.column("frame"), len(self.types), self.table)
        new_struct = self._struct(parsed.buffer, parsed.new)
        old_struct = self._struct(parsed.buffer, parsed.old)
        key = pc.coalesce(new_struct.field(self.key_index), old_struct.field(self.key_index))
        old_kind = _OLD_KINDS.take(pa.array(_OLD_KIND_INDEX[parsed.old_marker]))
        arrays = [
            *(rows.column(f.name) for f in META_FIELDS),
            key,
            old_kind,
            new_struct,
            old_struct,
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _struct(self, buffer: npt.NDArray[np.uint8], images: Images) -> pa.StructArray:
        children = [
            t.convert(binary_column(buffer, images, column)) for column, t in enumerate(self.types)
        ]
        mask = pa.array(~images.present, pa.bool_())
        return pa.StructArray.from_arrays(children, fields=list(self.struct_type), mask=mask)


# ------------------------------------------------------------------------------------ writer


@dataclass
class _PartWriter:
    layout: TableLayout
    part: int
    tmp_path: Path
    rows: list[pa.RecordBatch] = field(default_factory=list)
    pending: int = 0
    written: int = 0
    ops: dict[str, int] = field(default_factory=dict)
    writer: pq.ParquetWriter | None = None

    def flush(self) -> None:
        if not self.pending:
            return
        pending = pa.concat_batches(self.rows)
        batch = self.layout.to_record_batch(pending)
        if self.writer is None:
            # zstd level 1: measured 484 MB/s compress on this box, and the files are read
            # once by the apply step, so a faster codec level beats a smaller file. No
            # dictionary pages: row images are mostly distinct values, and without them a
            # 100k-row group was both faster to write (0.23 vs 0.36 s) and smaller (2.9 vs
            # 4.6 MB) in the 1M-change benchmark.
            self.writer = pq.ParquetWriter(
                self.tmp_path,
                self.layout.schema,
                compression="zstd",
                compression_level=1,
                use_dictionary=False,
            )
        self.writer.write_batch(batch, row_group_size=self.pending)
        for counted in pc.value_counts(pending.column("op")).to_pylist():
            self.ops[counted["values"]] = self.ops.get(counted["values"], 0) + counted["counts"]
        self.written += self.pending
        self.rows.clear()
        self.pending = 0


class BatchWriter:
    """Streams one batch's changes into per-table temp files, then lands them atomically.

    Memory stays bounded by ``rows_per_flush`` rows per open part, however large a
    transaction is: rows are written out as Parquet row groups as they arrive, into temp
    files that only :meth:`land` makes visible.
    """

    def __init__(self, folder: Path, start: Lsn, rows_per_flush: int) -> None:
        self.folder = folder
        self.start = start
        self.rows_per_flush = rows_per_flush
        self._parts: list[_PartWriter] = []
        self._current: dict[str, _PartWriter] = {}

    def layout_of(self, table: str) -> TableLayout | None:
        """The layout rows of ``table`` are currently written with, if any."""
        part = self._current.get(table)
        return None if part is None else part.layout

    def set_layout(self, layout: TableLayout) -> None:
        """Start a new part for ``layout.table`` (first use, or after a relation change)."""
        previous = self._current.get(layout.table)
        if previous is not None:
            previous.flush()
        part = 0 if previous is None else previous.part + 1
        tmp = self.folder / f".{self.start.hex16}.{layout.table}.{part:03d}.parquet{_TMP_SUFFIX}"
        writer = _PartWriter(layout, part, tmp)
        self._parts.append(writer)
        self._current[layout.table] = writer

    def add(self, table: str, rows: pa.RecordBatch) -> None:
        """Queue ``rows`` (:data:`PENDING_SCHEMA`, in change order) for ``table``'s current part.

        A part is flushed at exactly ``rows_per_flush`` rows, so its row groups do not depend
        on how the stream was fetched.
        """
        part = self._current[table]
        while rows.num_rows:
            head = rows.slice(0, self.rows_per_flush - part.pending)
            rows = rows.slice(head.num_rows)
            part.rows.append(head)
            part.pending += head.num_rows
            if part.pending >= self.rows_per_flush:
                part.flush()

    def land(self, end: Lsn, manifest_fields: dict[str, Any]) -> Manifest:
        """Make the batch durable: data files, then the manifest, each fsync'd and renamed.

        Args:
            end: the LSN the slot will be advanced to.
            manifest_fields: the remaining :class:`Manifest` fields (slot, digest, counts).
        """
        files: list[ChangeFile] = []
        for part in self._parts:
            part.flush()
            if part.writer is None:
                continue
            part.writer.close()
            part.writer = None
            fsync_path(part.tmp_path)
            name = data_file_name(self.start, end, part.layout.table, part.part)
            final = self.folder / name
            publish_file(part.tmp_path, final)
            files.append(
                ChangeFile(
                    table=part.layout.table,
                    part=part.part,
                    relation_oid=part.layout.relation.oid,
                    path=name,
                    rows=part.written,
                    sha256=file_sha256(final),
                    ops=dict(sorted(part.ops.items())),
                    columns=part.layout.column_specs(),
                )
            )
        fsync_path(self.folder)
        manifest = Manifest(
            format=FORMAT,
            start_lsn=str(self.start),
            end_lsn=str(end),
            files=tuple(files),
            **manifest_fields,
        )
        land_manifest(self.folder, manifest)
        return manifest

    def abort(self) -> None:
        """Drop the temp files of an unlanded batch."""
        for part in self._parts:
            if part.writer is not None:
                with contextlib.suppress(OSError):
                    part.writer.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part.tmp_path)
        self._parts.clear()
        self._current.clear()


def publish_file(tmp: Path, final: Path) -> None:
    """Rename a finished, fsync'd temp file to its final name (atomic on POSIX)."""
    os.replace(tmp, final)


def land_manifest(folder: Path, manifest: Manifest) -> None:
    """Write the manifest: from this moment the batch is landed."""
    atomic_write_bytes(folder / f"{manifest.name}.json", manifest.to_json())


def read_changes(folder: Path, manifests: Iterable[Manifest], table: str) -> Iterator[pa.Table]:
    """The data files of ``table`` in the given batches, in change order, one table per part.

    Parts of one table can differ in columns (a column added mid-stream); callers that need a
    single schema can ``pa.concat_tables(..., promote_options="default")`` them.
    """
    for manifest in manifests:
        for change_file in manifest.files:
            if change_file.table == table:
                yield pq.read_table(folder / change_file.path)
