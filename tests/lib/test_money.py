from decimal import Decimal

import psycopg
import pytest

from ledger_assets.lib.money import (
    CURRENCY_EXPONENTS,
    InexactAmountError,
    UnknownCurrencyError,
    exponent,
    from_minor,
    rounding_residual,
    to_minor,
    to_minor_exact,
)


def test_exponents_equal_the_currencies_table(migrated_dsn: str) -> None:
    with psycopg.connect(migrated_dsn) as conn:
        rows = dict(conn.execute("select code, exponent from ledger.currencies").fetchall())
    assert rows == dict(CURRENCY_EXPONENTS)


@pytest.mark.parametrize(
    ("code", "expected"), [("usd", 2), ("USD", 2), ("jpy", 0), ("kwd", 3), ("isk", 2)]
)
def test_exponent(code: str, expected: int) -> None:
    assert exponent(code) == expected


def test_unknown_currency_is_a_clear_error() -> None:
    with pytest.raises(UnknownCurrencyError, match="unknown currency 'xyz'"):
        exponent("xyz")


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("12.34", "usd", 1234),
        ("0.125", "usd", 12),  # tie -> even
        ("0.135", "usd", 14),  # tie -> even
        ("-0.125", "usd", -12),
        ("0.1251", "usd", 13),  # not a tie
        ("100.5", "jpy", 100),
        ("101.5", "jpy", 102),
        ("5.1235", "kwd", 5124),
        ("5.12", "kwd", 5120),
        ("-2.665", "eur", -266),
    ],
)
def test_to_minor_rounds_half_even(amount: str, currency: str, minor: int) -> None:
    assert to_minor(Decimal(amount), currency) == minor


def test_to_minor_accepts_int_and_rejects_float_and_bool() -> None:
    assert to_minor(3, "usd") == 300
    with pytest.raises(TypeError):
        to_minor(0.29, "usd")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        to_minor(True, "usd")


def test_to_minor_exact() -> None:
    assert to_minor_exact(Decimal("0.29"), "usd") == 29
    assert to_minor_exact(Decimal("1.10"), "usd") == 110
    with pytest.raises(InexactAmountError, match="more than 2 decimal places"):
        to_minor_exact(Decimal("1.001"), "usd")
    with pytest.raises(InexactAmountError):
        to_minor_exact(Decimal("NaN"), "usd")


def test_from_minor_is_exact_and_round_trips() -> None:
    assert from_minor(1234, "usd") == Decimal("12.34")
    assert str(from_minor(5120, "kwd")) == "5.120"
    assert from_minor(100, "jpy") == Decimal(100)
    for currency in ("usd", "jpy", "kwd"):
        for minor in (-100_001, -1, 0, 1, 99, 123_456_789_012):
            assert to_minor_exact(from_minor(minor, currency), currency) == minor


def test_rounding_residual() -> None:
    assert rounding_residual(Decimal("0.125"), "usd") == Decimal("0.005")
    assert rounding_residual(Decimal("0.12"), "usd") == 0
