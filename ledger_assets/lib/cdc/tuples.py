"""Vectorised parsing of pgoutput Insert/Update/Delete messages, a table-part at a time.

Parsing row images one value at a time in Python cost ~10 µs per row and dominated the capture
(profile in the CDC report). Every message of one table part has the same column count, so
the tuple format can be walked for all rows at once, one column at a time, with numpy: for
column ``c``, read every row's kind byte, read the 4-byte length where the kind is ``'t'``,
step every row's cursor past its value. The values are then gathered into Arrow binary arrays
without a Python object per value. :func:`ledger_assets.lib.cdc.pgoutput.decode` remains the
reference decoder and a test checks the two agree.

Messages arrive as *frames*: a frame is the message's 8-byte big-endian LSN followed by the
pgoutput bytes, exactly as the capture hashes and reads them (see ``capture._PEEK``), and the
rows of a part are one Arrow ``large_binary`` array of frames (an empty frame is a row without
a message: a TRUNCATE).

Layouts handled (pgoutput v1)::

    I oid 'N' new
    U oid ['O' old | 'K' key] 'N' new
    D oid ('O' old | 'K' key)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from ledger_assets.lib.cdc.errors import DecodeError, ToastValueUnavailableError

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
BOOLS = npt.NDArray[np.bool_]

_T, _N, _U = ord("t"), ord("n"), ord("u")
_O, _K, _NEW = ord("O"), ord("K"), ord("N")
_I, _D = ord("I"), ord("D")
#: Kind recorded for a row that has no such image (an insert's old row, a delete's new row).
ABSENT: Final = 0
#: Bytes of the LSN that starts every frame.
LSN_BYTES: Final = 8


@dataclass(frozen=True)
class Images:
    """One side (new or old) of every row, column-major: ``kinds[c, row]`` etc."""

    kinds: U8
    starts: I64
    lengths: I64
    present: BOOLS


@dataclass(frozen=True)
class ParsedRows:
    buffer: U8
    new: Images
    old: Images
    #: Per row: ``O`` (full old row), ``K`` (key only) or 0 (no old row).
    old_marker: U8


def frame_bounds(frames: pa.LargeBinaryArray) -> tuple[U8, I64]:
    """The data buffer of ``frames`` and its ``len + 1`` offsets into it (no copy)."""
    _, offsets, data = frames.buffers()
    # A large_binary array always has both buffers.
    assert offsets is not None
    assert data is not None
    bounds = np.frombuffer(offsets, np.int64)[frames.offset : frames.offset + len(frames) + 1]
    return np.frombuffer(data, np.uint8), bounds


def parse_rows(frames: pa.LargeBinaryArray, width: int, table: str) -> ParsedRows:
    """Parse every row image of ``frames`` (an empty frame for a TRUNCATE row, which has none).

    Unchanged-TOAST values (``'u'``) in the new image are resolved from the full old image.

    Raises:
        DecodeError: on a malformed message or a column count other than ``width``.
        ToastValueUnavailableError: when a ``'u'`` value has no full old row to come from.
    """
    try:
        return _parse_rows(frames, width, table)
    except IndexError as exc:
        raise DecodeError(f"{table}: truncated pgoutput row message") from exc


def _parse_rows(frames: pa.LargeBinaryArray, width: int, table: str) -> ParsedRows:
    count = len(frames)
    buffer, bounds = frame_bounds(frames)
    starts = bounds[:-1] + LSN_BYTES
    lengths = np.maximum(np.diff(bounds) - LSN_BYTES, 0)
    is_row = lengths > 0
    rows = np.nonzero(is_row)[0]
    tags = buffer[starts[rows]]
    cursor = starts[rows] + 5  # tag byte + relation oid
    marker = buffer[cursor]
    has_old = (marker == _O) | (marker == _K)
    old_sub = _parse_images(buffer, cursor[has_old] + 1, width, table)
    cursor[has_old] = old_sub.end
    has_new = tags != _D
    if np.any(has_new & (tags != _I) & (tags != ord("U"))) or np.any((tags == _I) & has_old):
        raise DecodeError(f"{table}: unexpected row message layout")
    if np.any(buffer[cursor[has_new]] != _NEW) or np.any((tags == _D) & ~has_old):
        raise DecodeError(f"{table}: row message without its expected tuple marker")
    new_sub = _parse_images(buffer, cursor[has_new] + 1, width, table)
    cursor[has_new] = new_sub.end
    if np.any(cursor != starts[rows] + lengths[rows]):
        raise DecodeError(f"{table}: row message length does not match its tuples")

    old_marker = np.zeros(count, np.uint8)
    old_marker[rows[has_old]] = marker[has_old]
    old = _scatter(old_sub, rows[has_old], count, width)
    new = _scatter(new_sub, rows[has_new], count, width)
    _fill_unchanged(new, old, old_marker, table)
    if np.any(old.kinds == _U):
        raise ToastValueUnavailableError(f"{table}: unchanged TOAST value in an old row image")
    return ParsedRows(buffer, new, old, old_marker)


@dataclass(frozen=True)
class _Sub:
    kinds: U8
    starts: I64
    lengths: I64
    end: I64


_WORD: Final = np.arange(4)


def _parse_images(buffer: U8, cursor: I64, width: int, table: str) -> _Sub:
    """Walk TupleData blocks starting at ``cursor`` (one per row), a column at a time."""
    rows = len(cursor)
    counts = (buffer[cursor].astype(np.int64) << 8) | buffer[cursor + 1]
    if np.any(counts != width):
        raise DecodeError(f"{table}: row image column count differs from the relation's {width}")
    cursor = cursor + 2
    kinds = np.empty((width, rows), np.uint8)
    starts = np.empty((width, rows), np.int64)
    lengths = np.zeros((width, rows), np.int64)
    for column in range(width):
        kind = buffer[cursor]
        kinds[column] = kind
        text = kind == _T
        if np.any(~(text | (kind == _N) | (kind == _U))):
            raise DecodeError(f"{table}: tuple value kind other than 't', 'n' or 'u'")
        at = cursor[text] + 1
        size = buffer[at[:, np.newaxis] + _WORD].view(">i4").ravel().astype(np.int64)
        lengths[column, text] = size
        starts[column] = cursor + 5
        cursor = cursor + 1
        cursor[text] += 4 + size
    return _Sub(kinds, starts, lengths, cursor)


def _scatter(sub: _Sub, rows: I64, count: int, width: int) -> Images:
    if len(rows) == count:
        # Every row has this image (the new side of inserts and updates): already in place.
        return Images(sub.kinds, sub.starts, sub.lengths, np.ones(count, np.bool_))
    kinds = np.full((width, count), ABSENT, np.uint8)
    starts = np.zeros((width, count), np.int64)
    lengths = np.zeros((width, count), np.int64)
    kinds[:, rows] = sub.kinds
    starts[:, rows] = sub.starts
    lengths[:, rows] = sub.lengths
    present = np.zeros(count, np.bool_)
    present[rows] = True
    return Images(kinds, starts, lengths, present)


def _fill_unchanged(new: Images, old: Images, old_marker: U8, table: str) -> None:
    """Take every ``'u'`` value of a new row from the full old row (REPLICA IDENTITY FULL)."""
    unchanged = new.kinds == _U
    if not unchanged.any():
        return
    recoverable = (old_marker == _O)[np.newaxis, :] & (old.kinds != _U) & (old.kinds != ABSENT)
    if np.any(unchanged & ~recoverable):
        raise ToastValueUnavailableError(
            f"{table}: an update left a TOASTed value unchanged but sent no full old row to"
            " recover it from (is REPLICA IDENTITY FULL set?)"
        )
    new.kinds[unchanged] = old.kinds[unchanged]
    new.starts[unchanged] = old.starts[unchanged]
    new.lengths[unchanged] = old.lengths[unchanged]


def binary_column(buffer: U8, images: Images, column: int) -> pa.Array:
    """Column ``column`` of ``images`` as an Arrow large_binary array (NULL where not 't').

    The values lie in ``buffer`` in row order (each inside its own row's message), so they and
    the gaps between them form one valid binary array over the buffer: element ``2i`` is row
    ``i``'s value, element ``2i + 1`` the bytes up to the next one. Taking the even elements
    copies the values out in C++ (a NULL index gives a NULL value), with no per-byte index.
    """
    valid = images.kinds[column] == _T
    count = len(valid)
    ends = np.maximum.accumulate(np.where(valid, images.starts[column] + images.lengths[column], 0))
    # A NULL takes an empty slice at the end of the previous value, keeping offsets monotonic.
    starts = np.where(valid, images.starts[column], ends)
    offsets = np.empty(2 * count + 1, np.int64)
    offsets[0 : 2 * count : 2] = starts
    offsets[1 : 2 * count : 2] = ends
    offsets[2 * count] = ends[-1] if count else 0
    interleaved = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), 2 * count, [None, pa.py_buffer(offsets), pa.py_buffer(buffer)]
    )
    even = pa.array(np.arange(0, 2 * count, 2, dtype=np.int64), mask=~valid)
    return interleaved.take(even)
