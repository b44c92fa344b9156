"""Postgres column types to Arrow types, and text-format values to typed Arrow arrays.

pgoutput v1 sends every value in its text output form. The reading session pins the settings
that shape that text (``TimeZone=UTC``, ``DateStyle=ISO``; see :data:`SESSION_SETTINGS`), so the
forms are fixed and Arrow's own casts parse them exactly and vectorised: integers and decimals
never pass through float, timestamps keep their microseconds and come out UTC-aware. Anything
Arrow cannot parse exactly (``NaN`` numerics, ``infinity`` timestamps, BC dates, a value that
does not fit its declared scale) raises :class:`DecodeError` instead of being approximated.

Only the types the published schema uses are mapped; any other type fails closed when its
Relation message arrives, so a new column of an unknown type stops capture with a clear message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from ledger_assets.lib.cdc.errors import DecodeError, UnsupportedSchemaChangeError
from ledger_assets.lib.cdc.pgoutput import RelationColumn

#: Settings of the session that runs the peek: the output functions of every value honour them.
SESSION_SETTINGS: Final[dict[str, str]] = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "bytea_output": "hex",
}

# Type OIDs are fixed for built-in types (pg_type.dat).
BOOL, CHAR, INT8, INT2, INT4, TEXT, JSON = 16, 18, 20, 21, 23, 25, 114
BPCHAR, VARCHAR, DATE, TIMESTAMP, TIMESTAMPTZ, NUMERIC, JSONB = (
    1042,
    1043,
    1082,
    1114,
    1184,
    1700,
    3802,
)
TEXT_ARRAY, VARCHAR_ARRAY = 1009, 1015

_STRING_TYPES: Final = {CHAR: "char", TEXT: "text", BPCHAR: "bpchar", VARCHAR: "varchar"}
_JSON_TYPES: Final = {JSON: "json", JSONB: "jsonb"}
_ARRAY_TYPES: Final = {TEXT_ARRAY: "text[]", VARCHAR_ARRAY: "varchar[]"}
_SIMPLE: Final[dict[int, tuple[str, pa.DataType]]] = {
    BOOL: ("bool", pa.bool_()),
    INT2: ("int2", pa.int16()),
    INT4: ("int4", pa.int32()),
    INT8: ("int8", pa.int64()),
    DATE: ("date", pa.date32()),
    TIMESTAMP: ("timestamp", pa.timestamp("us")),
    TIMESTAMPTZ: ("timestamptz", pa.timestamp("us", tz="UTC")),
}
# numeric's typmod packs (precision << 16 | scale) + VARHDRSZ.
_VARHDRSZ: Final = 4
_MAX_DECIMAL_PRECISION: Final = 76


@dataclass(frozen=True)
class ColumnType:
    """How one Postgres column is stored in the change log."""

    #: Postgres' name for the type, for messages and Parquet field metadata.
    pg_name: str
    arrow: pa.DataType
    #: Raw text-format values (a large_binary array, NULL for SQL NULL) to ``arrow``.
    convert: Callable[[pa.Array], pa.Array]


def column_type(column: RelationColumn, table: str) -> ColumnType:
    """The change-log type of a relation column.

    Raises:
        UnsupportedSchemaChangeError: for a type the lake cannot hold exactly (unconstrained or
            negative-scale numeric, or any type not in the map).
    """
    oid = column.type_oid
    if oid in _SIMPLE:
        name, arrow = _SIMPLE[oid]
        if oid == BOOL:
            return ColumnType(name, arrow, _bools)
        return ColumnType(name, arrow, _cast_via_string(arrow))
    if oid in _STRING_TYPES:
        return ColumnType(_STRING_TYPES[oid], pa.string(), _strings)
    if oid in _JSON_TYPES:
        # JSON stays JSON text: Arrow has no lossless JSON value type that DuckDB and the
        # lake's Parquet files agree on, and the text is exactly what Postgres stored.
        return ColumnType(_JSON_TYPES[oid], pa.string(), _strings)
    if oid in _ARRAY_TYPES:
        return ColumnType(_ARRAY_TYPES[oid], pa.list_(pa.string()), _text_arrays)
    if oid == NUMERIC:
        return _numeric(column, table)
    raise UnsupportedSchemaChangeError(
        f"{table}.{column.name} has type oid {oid}, which the change log cannot store exactly"
    )


def _numeric(column: RelationColumn, table: str) -> ColumnType:
    if column.typmod < _VARHDRSZ:
        raise UnsupportedSchemaChangeError(
            f"{table}.{column.name} is an unconstrained numeric; the lake needs numeric(p,s)"
        )
    packed = column.typmod - _VARHDRSZ
    precision, scale = (packed >> 16) & 0xFFFF, packed & 0x7FF
    if packed & 0x400 or precision > _MAX_DECIMAL_PRECISION:
        raise UnsupportedSchemaChangeError(
            f"{table}.{column.name} numeric typmod {column.typmod} has no exact Arrow decimal"
        )
    arrow = pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
    return ColumnType(f"numeric({precision},{scale})", arrow, _cast_via_string(arrow))


def _strings(values: pa.Array) -> pa.Array:
    try:
        return values.cast(pa.large_string()).cast(pa.string())
    except pa.ArrowInvalid as exc:
        raise DecodeError(f"text value is not valid UTF-8: {exc}") from exc


def _cast_via_string(arrow: pa.DataType) -> Callable[[pa.Array], pa.Array]:
    def convert(values: pa.Array) -> pa.Array:
        try:
            return _strings(values).cast(arrow)
        except pa.ArrowInvalid as exc:
            raise DecodeError(f"cannot convert a value exactly to {arrow}: {exc}") from exc

    return convert


def _bools(values: pa.Array) -> pa.Array:
    true = pc.equal(values, pa.scalar(b"t", values.type))
    false = pc.equal(values, pa.scalar(b"f", values.type))
    if pc.all(pc.or_kleene(true, false)).as_py() is False:
        raise DecodeError("boolean value other than 't' or 'f'")
    return true


def _text_arrays(values: pa.Array) -> pa.Array:
    # Rare (one column of one table) and small: a Python parser is fast enough here.
    texts = _strings(values).to_pylist()
    parsed = [None if v is None else parse_text_array(v) for v in texts]
    return pa.array(parsed, type=pa.list_(pa.string()))


def parse_text_array(text: str) -> list[str | None]:
    """Parse the text output of a one-dimensional ``text[]`` with lower bound 1.

    Elements are separated by commas; an element is quoted when it is empty, contains a special
    character or spells NULL, and inside quotes backslash escapes the next character. An
    unquoted ``NULL`` is SQL NULL.

    Raises:
        DecodeError: for a multi-dimensional array, explicit bounds, or malformed text.
    """
    try:
        return _parse_text_array(text)
    except IndexError as exc:
        raise DecodeError(f"malformed array text: {text[:60]!r}") from exc


def _parse_text_array(text: str) -> list[str | None]:
    if not text.startswith("{") or not text.endswith("}"):
        raise DecodeError(f"not a one-dimensional array with default bounds: {text[:60]!r}")
    body = text[1:-1]
    if body == "":
        return []
    items: list[str | None] = []
    pos, end = 0, len(body)
    while True:
        if body[pos] == "{":
            raise DecodeError("multi-dimensional arrays are not supported")
        if body[pos] == '"':
            chars: list[str] = []
            pos += 1
            while body[pos] != '"':
                if body[pos] == "\\":
                    pos += 1
                chars.append(body[pos])
                pos += 1
            items.append("".join(chars))
            pos += 1
        else:
            comma = body.find(",", pos)
            stop = end if comma == -1 else comma
            word = body[pos:stop]
            items.append(None if word.upper() == "NULL" else word)
            pos = stop
        if pos == end:
            return items
        if body[pos] != ",":
            raise DecodeError(f"malformed array text near offset {pos}: {text[:60]!r}")
        pos += 1
