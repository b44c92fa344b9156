"""Columnar building blocks of the stand-ins' in-memory store.

Millions of objects are held as numpy columns, never as Python dicts: an int64 column costs
8 bytes a row, a dict of 25 fields about 2 KB. Three ideas keep rendering cheap as well:

* ids are kept as their counter (the generator's ids are a prefix plus fixed-width base 36 of a
  counter) and re-encoded for the rows of one page only;
* low-cardinality text (statuses, reasons, descriptions, even ``fee_details`` JSON, which takes
  a few thousand distinct values) is stored as int32 codes into a :class:`Categories` table that
  keeps each value already rendered as JSON bytes;
* a page is rendered by gathering each column for the page's rows and ``%``-formatting one
  bytes template per object, so JSON text never passes through ``json.dumps``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ledger_assets.lib.synth.ids import ID_DIGITS, encode_ids

I64 = npt.NDArray[np.int64]
Rows = npt.NDArray[np.intp]
Obj = npt.NDArray[np.object_]

#: Marks a missing id or a missing timestamp/date in an int64 column.
NULL = -1
_BOOL_JSON: Obj = np.array([b"false", b"true"], dtype=object)
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
#: Below this many ids, formatting in Python beats numpy's per-call overhead.
_SCALAR_IDS = 8
_DIGIT_VALUE = np.full(256, -1, dtype=np.int64)
_DIGIT_VALUE[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_DIGIT_VALUE[np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", np.uint8)] = np.arange(10, 36)
_POWERS = 36 ** np.arange(ID_DIGITS - 1, -1, -1, dtype=np.int64)


def decode_ids(matrix: npt.NDArray[np.uint8], prefix: str) -> I64:
    """Counters of a ``(rows, width)`` id matrix made by :func:`~.synth.ids.encode_ids`.

    Raises:
        ValueError: an id does not start with ``prefix`` or is not base 36.
    """
    p = len(prefix)
    if len(matrix) == 0:
        return np.empty(0, dtype=np.int64)
    if matrix.shape[1] != p + ID_DIGITS or not np.all(
        matrix[:, :p] == np.frombuffer(prefix.encode("ascii"), np.uint8)
    ):
        raise ValueError(f"ids are not {prefix!r} + {ID_DIGITS} base-36 digits")
    digits = _DIGIT_VALUE[matrix[:, p:]]
    if np.any(digits < 0):
        raise ValueError(f"ids with prefix {prefix!r} hold characters outside base 36")
    return digits @ _POWERS


def parse_id(text: str, prefix: str) -> int | None:
    """The counter of one id string, or None if it is not a well-formed ``prefix`` id."""
    if len(text) != len(prefix) + ID_DIGITS or not text.startswith(prefix):
        return None
    digits = text[len(prefix) :]
    if not all(c in "0123456789abcdefghijklmnopqrstuvwxyz" for c in digits):
        return None
    return int(digits, 36)


def format_id(prefix: str, number: int) -> str:
    """One id string (the scalar twin of :func:`encode_ids`, without numpy's call overhead)."""
    digits = []
    for _ in range(ID_DIGITS):
        number, digit = divmod(number, 36)
        digits.append(_ALPHABET[digit])
    return prefix + "".join(reversed(digits))


def id_json(prefix: str, numbers: I64) -> list[bytes]:
    """JSON string literals (``b'"ch_..."'``) for ids, ``b"null"`` where the counter is NULL."""
    n = len(numbers)
    if n <= _SCALAR_IDS:
        return [
            b"null" if v < 0 else b'"%b"' % format_id(prefix, v).encode() for v in numbers.tolist()
        ]
    width = len(prefix) + ID_DIGITS
    quoted = np.empty((n, width + 2), dtype=np.uint8)
    quoted[:, 0] = quoted[:, -1] = ord('"')
    quoted[:, 1:-1] = encode_ids(prefix, np.maximum(numbers, 0))
    out: list[bytes] = np.ascontiguousarray(quoted).view(f"S{width + 2}").ravel().tolist()
    if np.any(numbers < 0):
        return [b"null" if v < 0 else s for v, s in zip(numbers.tolist(), out, strict=True)]
    return out


def bool_json(values: npt.NDArray[np.bool_]) -> list[bytes]:
    """``b"true"``/``b"false"`` per value."""
    rendered: list[bytes] = _BOOL_JSON[values.astype(np.intp)].tolist()
    return rendered


class Categories:
    """Low-cardinality text as codes; code 0 is JSON ``null``.

    Args:
        raw_json: values are JSON text already (``fee_details``) and are emitted verbatim
            instead of being rendered as JSON strings.
    """

    def __init__(self, raw_json: bool = False) -> None:
        self._raw = raw_json
        self._codes: dict[str, int] = {}
        self.values: list[str | None] = [None]
        self._json: Obj = np.array([b"null"], dtype=object)

    def code(self, value: str | None) -> int:
        """The code of ``value``, adding it if new."""
        if value is None:
            return 0
        found = self._codes.get(value)
        if found is None:
            found = len(self.values)
            self._codes[value] = found
            self.values.append(value)
            rendered = value if self._raw else json.dumps(value)
            self._json = np.append(self._json, np.array([rendered.encode()], dtype=object))
        return found

    def encode(self, column: pa.Array | Sequence[str | None]) -> npt.NDArray[np.int32]:
        """Codes of a whole column (Arrow or a sequence); only distinct values touch Python."""
        array = column if isinstance(column, pa.Array) else pa.array(column, pa.string())
        encoded = pc.dictionary_encode(array)
        local = np.array([self.code(v) for v in encoded.dictionary.to_pylist()] or [0], np.int32)
        indices = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.intp)
        # Nulls (index -1) map to code 0 through the appended sentinel.
        codes: npt.NDArray[np.int32] = np.append(local, np.int32(0))[indices]
        return codes

    def json(self, codes: npt.NDArray[np.int32]) -> list[bytes]:
        """Each code's value rendered as JSON bytes."""
        rendered: list[bytes] = self._json[codes.astype(np.intp)].tolist()
        return rendered

    def text(self, code: int) -> str | None:
        """The value of one code."""
        return self.values[code]


class Table:
    """Growable columns of fixed dtype; rows are appended, values may be overwritten.

    Args:
        dtypes: column name to numpy dtype.
    """

    def __init__(self, dtypes: Mapping[str, npt.DTypeLike]) -> None:
        self.rows = 0
        self._cols: dict[str, npt.NDArray[np.generic]] = {
            name: np.empty(0, dtype=dtype) for name, dtype in dtypes.items()
        }

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, name: str) -> npt.NDArray[Any]:
        """The live column (a view; writes go to the table)."""
        return self._cols[name][: self.rows]

    @property
    def names(self) -> Iterable[str]:
        return self._cols.keys()

    def extend(self, values: Mapping[str, npt.ArrayLike]) -> range:
        """Append rows given column-wise (every column must be given); returns their rows."""
        if set(values) != set(self._cols):
            missing = set(self._cols) ^ set(values)
            raise KeyError(f"columns do not match the table: {sorted(missing)}")
        arrays = {name: np.asarray(v) for name, v in values.items()}
        count = len(next(iter(arrays.values())))
        start, end = self.rows, self.rows + count
        for name, col in self._cols.items():
            if end > len(col):
                # Doubling keeps appends amortised O(1); history loads are exact-size.
                grown = np.empty(max(end, 2 * len(col), 16) if col.size else end, dtype=col.dtype)
                grown[:start] = col[:start]
                self._cols[name] = col = grown
            col[start:end] = arrays[name]
        self.rows = end
        return range(start, end)

    def take(self, rows: Rows | Sequence[int] | range) -> dict[str, npt.NDArray[Any]]:
        """Copies of every column at ``rows`` (a page, or one object to patch for a snapshot)."""
        index = np.asarray(rows, dtype=np.intp)
        return {name: col[: self.rows][index] for name, col in self._cols.items()}
