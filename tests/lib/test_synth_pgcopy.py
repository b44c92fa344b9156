"""The binary COPY encoder, round-tripped through a real server."""

from datetime import UTC, date, datetime
from decimal import Decimal

import numpy as np
import psycopg
import pyarrow as pa

from ledger_assets.lib.synth.ids import encode_ids, ids_as_str
from ledger_assets.lib.synth.pgcopy import HEADER, TRAILER, Column, Encoder, Kind

COLUMNS = [
    Column("i4", Kind.INT4),
    Column("i8", Kind.INT8),
    Column("b", Kind.BOOL),
    Column("ts", Kind.TIMESTAMPTZ),
    Column("d", Kind.DATE),
    Column("ft", Kind.FIXED_TEXT, 3),
    Column("num", Kind.NUMERIC_E4),
    Column("t", Kind.TEXT),
    Column("j", Kind.JSONB),
    Column("arr", Kind.TEXT_ARRAY),
    Column("nft", Kind.NULLABLE_FIXED_TEXT, 2),
    Column("nts", Kind.NULLABLE_TIMESTAMPTZ),
    Column("nd", Kind.NULLABLE_DATE),
]


def test_round_trip(migrated_dsn: str) -> None:
    encoder = Encoder(COLUMNS)
    values = {
        "i4": np.array([1, -2, 2**31 - 1], dtype=np.int32),
        "i8": np.array([0, -(2**62), 2**62], dtype=np.int64),
        "b": np.array([True, False, True]),
        "ts": np.array([0, 1_700_000_000, 946_684_799], dtype=np.int64),
        "d": np.array([0, 20_000, -1], dtype=np.int64),
        "ft": np.frombuffer(b"usdjpykwd", dtype=np.uint8).reshape(3, 3),
        "num": np.array([123_400, -5, 999_999_999_999_999], dtype=np.int64),
        "t": pa.array(["héllo", None, ""]),
        "j": pa.array(['{"a": [1, 2]}', None, "[]"]),
        "arr": pa.array([["x", "yz"], [], None], pa.list_(pa.string())),
        "nft": (
            np.frombuffer(b"abcdef", dtype=np.uint8).reshape(3, 2),
            np.array([True, False, True]),
        ),
        "nts": (np.array([10, 20, 30], dtype=np.int64), np.array([False, True, False])),
        "nd": (np.array([1, 2, 3], dtype=np.int64), np.array([True, True, False])),
    }
    body = encoder.encode(values, 3)
    with psycopg.connect(migrated_dsn) as conn:
        conn.execute(
            "create temp table rt (i4 int4, i8 int8, b bool, ts timestamptz, d date, ft text, "
            "num numeric(20, 4), t text, j jsonb, arr text[], nft text, nts timestamptz, nd date)"
        )
        cols = ", ".join(encoder.columns)
        with conn.cursor().copy(f"copy rt ({cols}) from stdin (format binary)") as copy:  # type: ignore[arg-type]
            copy.write(HEADER)
            copy.write(body)
            copy.write(TRAILER)
        rows = conn.execute("select * from rt order by i4 desc").fetchall()
    assert rows[0] == (
        2**31 - 1, 2**62, True, datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC),
        date(1969, 12, 31), "kwd", Decimal("99999999999.9999"), "", [], None, "ef", None, None,
    )  # fmt: skip
    assert rows[1] == (
        1, 0, True, datetime(1970, 1, 1, tzinfo=UTC), date(1970, 1, 1), "usd", Decimal("12.34"),
        "héllo", {"a": [1, 2]}, ["x", "yz"], "ab", None, date(1970, 1, 2),
    )  # fmt: skip
    assert rows[2][6] == Decimal("-0.0005")
    assert rows[2][7] is None
    assert rows[2][8] is None
    assert rows[2][10] is None
    assert rows[2][11] == datetime(1970, 1, 1, 0, 0, 20, tzinfo=UTC)


def test_ids_ascend_with_their_counters() -> None:
    numbers = np.array([0, 1, 35, 36, 1295, 1296, 10**12])
    ids = ids_as_str(encode_ids("ch_", numbers))
    assert ids == sorted(ids)
    assert [int(i[3:], 36) for i in ids] == numbers.tolist()
    assert len({len(i) for i in ids}) == 1
