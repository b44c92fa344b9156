"""A decoder for pgoutput protocol version 1, the logical decoding plugin built into Postgres.

Every message the plugin can send under ``proto_version '1'`` is decoded: Begin, Commit, Origin,
Relation, Type, Insert, Update, Delete, Truncate and (logical) Message. Tuple values stay as the
raw text-format bytes Postgres sent (``'t'``), ``None`` for SQL NULL (``'n'``) or
:data:`UNCHANGED_TOAST` (``'u'``); turning them into typed values happens column-at-a-time in
:mod:`ledger_assets.lib.cdc.pgtypes`, where Arrow does it vectorised and exactly.

Format reference: PostgreSQL 15 documentation, "Logical Replication Message Formats".
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, Literal

from ledger_assets.lib.cdc.errors import DecodeError
from ledger_assets.lib.cdc.lsn import Lsn

#: Microseconds between the Unix epoch and Postgres' epoch (2000-01-01 UTC).
PG_EPOCH_OFFSET_US: Final = 946_684_800_000_000


class _UnchangedToast:
    """Marker type of :data:`UNCHANGED_TOAST` (a value Postgres did not resend)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"


#: A TOASTed value an UPDATE left unchanged: pgoutput sends ``'u'`` instead of the value.
UNCHANGED_TOAST: Final = _UnchangedToast()

TupleValue = bytes | None | _UnchangedToast


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: Lsn
    #: Commit time, microseconds since the Unix epoch (UTC).
    commit_ts_us: int
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    flags: int
    commit_lsn: Lsn
    #: The position right after the commit record: where a consumer resumes.
    end_lsn: Lsn
    commit_ts_us: int


@dataclass(frozen=True, slots=True)
class Origin:
    origin_lsn: Lsn
    name: str


@dataclass(frozen=True, slots=True)
class RelationColumn:
    name: str
    type_oid: int
    typmod: int
    #: True when the column is part of the replica identity.
    is_key: bool


@dataclass(frozen=True, slots=True)
class Relation:
    oid: int
    namespace: str
    name: str
    #: ``d`` default, ``n`` nothing, ``f`` full, ``i`` index.
    replica_identity: str
    columns: tuple[RelationColumn, ...]


@dataclass(frozen=True, slots=True)
class TypeInfo:
    oid: int
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Insert:
    relation_oid: int
    new: list[TupleValue]


@dataclass(frozen=True, slots=True)
class Update:
    relation_oid: int
    #: ``O``: the whole old row (REPLICA IDENTITY FULL); ``K``: old key only; None: neither.
    old_kind: Literal["O", "K"] | None
    old: list[TupleValue] | None
    new: list[TupleValue]


@dataclass(frozen=True, slots=True)
class Delete:
    relation_oid: int
    old_kind: Literal["O", "K"]
    old: list[TupleValue]


@dataclass(frozen=True, slots=True)
class Truncate:
    relation_oids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    transactional: bool
    lsn: Lsn
    prefix: str
    content: bytes


Message = (
    Begin
    | Commit
    | Origin
    | Relation
    | TypeInfo
    | Insert
    | Update
    | Delete
    | Truncate
    | LogicalMessage
)

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_BEGIN = struct.Struct("!QqI")
_COMMIT = struct.Struct("!BQQq")
_REL_HEAD = struct.Struct("!I")
_COLUMN_TAIL = struct.Struct("!Ii")
_TRUNCATE_HEAD = struct.Struct("!iB")
_MESSAGE_HEAD = struct.Struct("!BQ")

_T, _N, _U, _B = ord("t"), ord("n"), ord("u"), ord("b")


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(b"\0", pos)
    return buf[pos:end].decode("utf-8"), end + 1


def read_tuple(buf: bytes, pos: int) -> tuple[list[TupleValue], int]:
    """Read one TupleData block starting at ``pos``; return the values and the next offset.

    This is the hot loop of the capture (one call per row image), so it avoids everything but
    slicing: values are kept as bytes and converted per column later.

    Raises:
        DecodeError: on a binary-format value (we never ask for ``binary``) or an unknown kind.
    """
    (count,) = _I16.unpack_from(buf, pos)
    pos += 2
    values: list[TupleValue] = []
    append = values.append
    unpack_len = _I32.unpack_from
    for _ in range(count):
        kind = buf[pos]
        pos += 1
        if kind == _T:
            (length,) = unpack_len(buf, pos)
            pos += 4
            append(buf[pos : pos + length])
            pos += length
        elif kind == _N:
            append(None)
        elif kind == _U:
            append(UNCHANGED_TOAST)
        elif kind == _B:
            raise DecodeError("pgoutput sent a binary-format value, but binary was not requested")
        else:
            raise DecodeError(f"unknown pgoutput tuple value kind {kind!r} at offset {pos - 1}")
    return values, pos


def _old_kind(marker: int) -> Literal["O", "K"]:
    if marker == ord("O"):
        return "O"
    if marker == ord("K"):
        return "K"
    raise DecodeError(f"expected an old-tuple marker 'O' or 'K', got {chr(marker)!r}")


def decode(buf: bytes) -> Message:
    """Decode one pgoutput v1 message (the ``data`` column of a peeked change).

    Raises:
        DecodeError: on an unknown message type or a malformed message.
    """
    try:
        return _decode(buf)
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as exc:
        kind = chr(buf[0]) if buf else "<empty>"
        raise DecodeError(f"malformed pgoutput message {kind!r}: {exc}") from exc


def _decode(buf: bytes) -> Message:
    tag = buf[0]
    if tag == ord("I"):
        (oid,) = _REL_HEAD.unpack_from(buf, 1)
        if buf[5] != ord("N"):
            raise DecodeError(f"insert without a new tuple (marker {chr(buf[5])!r})")
        new, _ = read_tuple(buf, 6)
        return Insert(oid, new)
    if tag == ord("U"):
        (oid,) = _REL_HEAD.unpack_from(buf, 1)
        pos = 5
        old: list[TupleValue] | None = None
        old_kind: Literal["O", "K"] | None = None
        if buf[pos] != ord("N"):
            old_kind = _old_kind(buf[pos])
            old, pos = read_tuple(buf, pos + 1)
        if buf[pos] != ord("N"):
            raise DecodeError(f"update without a new tuple (marker {chr(buf[pos])!r})")
        new, _ = read_tuple(buf, pos + 1)
        return Update(oid, old_kind, old, new)
    if tag == ord("D"):
        (oid,) = _REL_HEAD.unpack_from(buf, 1)
        kind = _old_kind(buf[5])
        old_row, _ = read_tuple(buf, 6)
        return Delete(oid, kind, old_row)
    if tag == ord("B"):
        final_lsn, ts, xid = _BEGIN.unpack_from(buf, 1)
        return Begin(Lsn(final_lsn), ts + PG_EPOCH_OFFSET_US, xid)
    if tag == ord("C"):
        flags, commit_lsn, end_lsn, ts = _COMMIT.unpack_from(buf, 1)
        return Commit(flags, Lsn(commit_lsn), Lsn(end_lsn), ts + PG_EPOCH_OFFSET_US)
    if tag == ord("R"):
        return _relation(buf)
    if tag == ord("Y"):
        (oid,) = _U32.unpack_from(buf, 1)
        namespace, pos = _cstring(buf, 5)
        name, _ = _cstring(buf, pos)
        return TypeInfo(oid, namespace, name)
    if tag == ord("T"):
        count, options = _TRUNCATE_HEAD.unpack_from(buf, 1)
        oids = struct.unpack_from(f"!{count}I", buf, 6)
        return Truncate(tuple(oids), bool(options & 1), bool(options & 2))
    if tag == ord("O"):
        (origin_lsn,) = struct.unpack_from("!Q", buf, 1)
        name, _ = _cstring(buf, 9)
        return Origin(Lsn(origin_lsn), name)
    if tag == ord("M"):
        flags, lsn = _MESSAGE_HEAD.unpack_from(buf, 1)
        prefix, pos = _cstring(buf, 10)
        (length,) = _I32.unpack_from(buf, pos)
        content = buf[pos + 4 : pos + 4 + length]
        return LogicalMessage(bool(flags & 1), Lsn(lsn), prefix, content)
    raise DecodeError(f"unknown pgoutput message type {chr(tag)!r}")


def _relation(buf: bytes) -> Relation:
    (oid,) = _REL_HEAD.unpack_from(buf, 1)
    namespace, pos = _cstring(buf, 5)
    name, pos = _cstring(buf, pos)
    identity = chr(buf[pos])
    (count,) = _I16.unpack_from(buf, pos + 1)
    pos += 3
    columns: list[RelationColumn] = []
    for _ in range(count):
        flags = buf[pos]
        column, pos = _cstring(buf, pos + 1)
        type_oid, typmod = _COLUMN_TAIL.unpack_from(buf, pos)
        pos += 8
        columns.append(RelationColumn(column, type_oid, typmod, bool(flags & 1)))
    return Relation(oid, namespace, name, identity, tuple(columns))
