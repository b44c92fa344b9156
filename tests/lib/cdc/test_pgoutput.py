"""pgoutput v1 decoding, value conversion and LSNs, from hand-built messages."""

from __future__ import annotations

import random
import struct
from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from ledger_assets.lib.cdc import (
    DecodeError,
    Lsn,
    ToastValueUnavailableError,
    UnsupportedSchemaChangeError,
)
from ledger_assets.lib.cdc.pgoutput import (
    PG_EPOCH_OFFSET_US,
    UNCHANGED_TOAST,
    Begin,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Origin,
    Relation,
    RelationColumn,
    Truncate,
    TypeInfo,
    Update,
    decode,
)
from ledger_assets.lib.cdc.pgtypes import column_type, parse_text_array
from ledger_assets.lib.cdc.tuples import binary_column, parse_rows


def tuple_data(*values: bytes | object | None) -> bytes:
    out = struct.pack("!h", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value is UNCHANGED_TOAST:
            out += b"u"
        else:
            assert isinstance(value, bytes)
            out += b"t" + struct.pack("!i", len(value)) + value
    return out


def frames(messages: list[bytes | None]) -> pa.LargeBinaryArray:
    """Messages framed as the capture reads them (8-byte LSN first); None: a truncate row."""
    return pa.array(
        [b"" if m is None else struct.pack("!Q", 16 * n) + m for n, m in enumerate(messages)],
        pa.large_binary(),
    )


def test_begin_and_commit() -> None:
    begin = decode(b"B" + struct.pack("!QqI", 0x1_0000_0010, 1_000_000, 742))
    assert begin == Begin(Lsn(0x1_0000_0010), 1_000_000 + PG_EPOCH_OFFSET_US, 742)
    commit = decode(b"C" + struct.pack("!BQQq", 0, 0x10, 0x48, 5))
    assert commit == Commit(0, Lsn(0x10), Lsn(0x48), 5 + PG_EPOCH_OFFSET_US)


def test_relation_and_type() -> None:
    body = struct.pack("!I", 16422) + b"ledger\0stripe_charges\0f" + struct.pack("!h", 2)
    body += b"\x01id\0" + struct.pack("!Ii", 25, -1)
    body += b"\x00amount\0" + struct.pack("!Ii", 1700, (20 << 16 | 4) + 4)
    relation = decode(b"R" + body)
    assert relation == Relation(
        16422,
        "ledger",
        "stripe_charges",
        "f",
        (
            RelationColumn("id", 25, -1, True),
            RelationColumn("amount", 1700, (20 << 16 | 4) + 4, False),
        ),
    )
    assert decode(b"Y" + struct.pack("!I", 99) + b"public\0mood\0") == TypeInfo(
        99, "public", "mood"
    )


def test_insert_update_delete_with_every_value_kind() -> None:
    oid = struct.pack("!I", 7)
    assert decode(b"I" + oid + b"N" + tuple_data(b"a", None)) == Insert(7, [b"a", None])
    full_old = decode(
        b"U" + oid + b"O" + tuple_data(b"a", b"big") + b"N" + tuple_data(b"b", UNCHANGED_TOAST)
    )
    assert full_old == Update(7, "O", [b"a", b"big"], [b"b", UNCHANGED_TOAST])
    key_old = decode(b"U" + oid + b"K" + tuple_data(b"a", None) + b"N" + tuple_data(b"b", b"x"))
    assert key_old == Update(7, "K", [b"a", None], [b"b", b"x"])
    no_old = decode(b"U" + oid + b"N" + tuple_data(b"a", b""))
    assert no_old == Update(7, None, None, [b"a", b""])
    assert decode(b"D" + oid + b"O" + tuple_data(b"a", None)) == Delete(7, "O", [b"a", None])
    assert decode(b"D" + oid + b"K" + tuple_data(b"a", None)) == Delete(7, "K", [b"a", None])


def test_truncate_origin_and_message() -> None:
    truncate = decode(b"T" + struct.pack("!iB", 2, 3) + struct.pack("!II", 5, 6))
    assert truncate == Truncate((5, 6), cascade=True, restart_identity=True)
    assert decode(b"O" + struct.pack("!Q", 0x20) + b"node_a\0") == Origin(Lsn(0x20), "node_a")
    message = decode(b"M" + struct.pack("!BQ", 1, 0x30) + b"pfx\0" + struct.pack("!i", 3) + b"abc")
    assert message == LogicalMessage(True, Lsn(0x30), "pfx", b"abc")


@pytest.mark.parametrize(
    "raw",
    [
        b"Z",  # unknown message type
        b"I" + struct.pack("!I", 7) + b"N" + struct.pack("!h", 1) + b"b",  # binary value
        b"I" + struct.pack("!I", 7) + b"N" + struct.pack("!h", 1) + b"?",  # unknown kind
        b"I" + struct.pack("!I", 7) + b"N" + struct.pack("!h", 1) + b"t\x00",  # truncated
        b"D" + struct.pack("!I", 7) + b"X" + tuple_data(b"a"),  # bad old marker
    ],
)
def test_malformed_messages_are_decode_errors(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(raw)


def test_text_arrays() -> None:
    assert parse_text_array("{}") == []
    assert parse_text_array('{a,"b c","",NULL,"NULL","q\\"x\\\\y"}') == [
        "a",
        "b c",
        "",
        None,
        "NULL",
        'q"x\\y',
    ]
    for bad in ("{{a},{b}}", "[0:1]={a,b}", '{"open'):
        with pytest.raises(DecodeError):
            parse_text_array(bad)


def column(type_oid: int, typmod: int = -1) -> RelationColumn:
    return RelationColumn("c", type_oid, typmod, False)


def convert(type_oid: int, *values: bytes | None, typmod: int = -1) -> list[object]:
    raw = pa.array(values, pa.large_binary())
    converted: list[object] = column_type(column(type_oid, typmod), "t").convert(raw).to_pylist()
    return converted


def test_values_convert_exactly() -> None:
    numeric_20_10 = (20 << 16 | 10) + 4
    assert convert(20, b"9223372036854775807", b"-9223372036854775808", None) == [
        2**63 - 1,
        -(2**63),
        None,
    ]
    assert convert(21, b"-32768") == [-32768]
    assert convert(1700, b"9999999999.9999999999", b"-0.0000000001", typmod=numeric_20_10) == [
        Decimal("9999999999.9999999999"),
        Decimal("-0.0000000001"),
    ]
    assert convert(16, b"t", b"f", None) == [True, False, None]
    assert convert(1082, b"2024-02-29") == [date(2024, 2, 29)]
    assert convert(1184, b"2024-03-10 07:00:00.000001+00") == [
        datetime(2024, 3, 10, 7, 0, 0, 1, tzinfo=UTC)
    ]
    assert convert(3802, '{"k": "ü"}'.encode()) == ['{"k": "ü"}']
    assert convert(1009, b'{a,"b,c"}') == [["a", "b,c"]]
    assert column_type(column(1700, numeric_20_10), "t").arrow == pa.decimal128(20, 10)
    assert column_type(column(1700, (60 << 16 | 2) + 4), "t").arrow == pa.decimal256(60, 2)


@pytest.mark.parametrize(
    ("type_oid", "raw", "typmod"),
    [
        (1700, b"NaN", (20 << 16 | 4) + 4),
        (1700, b"1.23456", (20 << 16 | 4) + 4),  # more digits than the declared scale
        (1184, b"infinity", -1),
        (1082, b"0044-03-15 BC", -1),
        (16, b"x", -1),
        (23, b"2147483648", -1),
        (25, b"\xff", -1),
    ],
)
def test_values_that_cannot_be_exact_fail_closed(type_oid: int, raw: bytes, typmod: int) -> None:
    with pytest.raises(DecodeError):
        convert(type_oid, raw, typmod=typmod)


@pytest.mark.parametrize(("type_oid", "typmod"), [(1700, -1), (701, -1), (2950, -1)])
def test_types_without_an_exact_mapping_fail_closed(type_oid: int, typmod: int) -> None:
    with pytest.raises(UnsupportedSchemaChangeError):
        column_type(column(type_oid, typmod), "t")


def test_lsn_forms() -> None:
    lsn = Lsn.parse("16/B374D848")
    assert int(lsn) == 0x16_B374D848
    assert str(lsn) == "16/B374D848"
    assert lsn.hex16 == "00000016B374D848"
    assert Lsn.from_hex16(lsn.hex16) == lsn
    assert sorted([Lsn(0x10).hex16, Lsn(0x9).hex16]) == [Lsn(0x9).hex16, Lsn(0x10).hex16]
    for bad in ("16-B3", "", "123456789/0"):
        with pytest.raises(ValueError, match="LSN"):
            Lsn.parse(bad)


def _random_image(rng: random.Random, width: int, unchanged: bool) -> list[object]:
    values: list[object] = []
    for _ in range(width):
        roll = rng.random()
        if roll < 0.2:
            values.append(None)
        elif unchanged and roll < 0.3:
            values.append(UNCHANGED_TOAST)
        else:
            values.append(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300))))
    return values


# "IU": every row has a new image and a full old row, the parts' common case.
@pytest.mark.parametrize(
    ("seed", "kinds"), [(1, "IUUDKT"), (2, "IUUDKT"), (3, "IUUDKT"), (4, "IU")]
)
def test_vectorised_row_parser_agrees_with_the_reference_decoder(seed: int, kinds: str) -> None:
    rng = random.Random(seed)
    width, oid = 7, struct.pack("!I", 9)
    messages: list[bytes | None] = []
    for _ in range(300):
        kind = rng.choice(kinds)
        new = _random_image(rng, width, unchanged=kind == "U")
        old = [None if v is UNCHANGED_TOAST else v for v in _random_image(rng, width, False)]
        if kind == "I":
            messages.append(b"I" + oid + b"N" + tuple_data(*new))
        elif kind == "U":
            messages.append(b"U" + oid + b"O" + tuple_data(*old) + b"N" + tuple_data(*new))
        elif kind == "K":
            messages.append(b"U" + oid + b"N" + tuple_data(*old))
        elif kind == "D":
            messages.append(b"D" + oid + b"O" + tuple_data(*old))
        else:
            messages.append(None)
    parsed = parse_rows(frames(messages), width, "t")
    new_columns = [binary_column(parsed.buffer, parsed.new, c).to_pylist() for c in range(width)]
    old_columns = [binary_column(parsed.buffer, parsed.old, c).to_pylist() for c in range(width)]
    for row, raw in enumerate(messages):
        expected_new: list[object] = [None] * width
        expected_old: list[object] = [None] * width
        if raw is not None:
            message = decode(raw)
            if isinstance(message, Insert | Update):
                old_values = message.old if isinstance(message, Update) else None
                expected_new = [
                    o if v is UNCHANGED_TOAST and old_values is not None else v
                    for v, o in zip(message.new, old_values or [None] * width, strict=True)
                ]
            if isinstance(message, Update | Delete) and message.old is not None:
                expected_old = list(message.old)
        assert [c[row] for c in new_columns] == expected_new
        assert [c[row] for c in old_columns] == expected_old
        assert bool(parsed.new.present[row]) == (raw is not None and raw[:1] != b"D")


def test_unchanged_toast_without_a_full_old_row_fails_closed() -> None:
    oid = struct.pack("!I", 9)
    message = b"U" + oid + b"N" + tuple_data(b"id", UNCHANGED_TOAST)
    with pytest.raises(ToastValueUnavailableError, match="REPLICA IDENTITY FULL"):
        parse_rows(frames([message]), 2, "t")
