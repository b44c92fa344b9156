"""Money as integer minor units plus a currency, with Stripe's exponents.

Every amount in the system of record is a ``bigint`` count of the currency's minor unit (cents,
yen, fils). Stripe already sends integers; Plaid sends decimal major units, which are converted
here exactly, from :class:`~decimal.Decimal` and never through ``float``.

Rounding rule (one rule everywhere, chosen once): **half-even** ("banker's rounding"), the
default of Python's ``decimal`` and of Arrow. It only matters at boundaries where a value has
more fractional digits than the currency allows; half-even keeps the error of many such
roundings centred on zero. Note that Postgres' and DuckDB's ``round(numeric)`` break ties away
from zero, so a comparison must never re-round on one side only.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from types import MappingProxyType

#: Minor-unit exponent per lower-case currency code, exactly the rows that migration 0001 puts
#: into ``ledger.currencies`` (a test keeps the two equal). Stripe's exponents, not ISO's: ISK
#: is 2 in Stripe's API.
CURRENCY_EXPONENTS: Mapping[str, int] = MappingProxyType(
    {
        **dict.fromkeys(
            (
                "usd", "eur", "gbp", "cad", "aud", "nzd", "chf", "sek", "nok", "dkk", "sgd",
                "hkd", "mxn", "brl", "inr", "zar", "isk", "npr", "top", "wst",
            ),
            2,
        ),
        **dict.fromkeys(("jpy", "krw", "clp", "vnd"), 0),
        **dict.fromkeys(("kwd", "bhd", "jod", "omr", "tnd"), 3),
    }
)  # fmt: skip


class UnknownCurrencyError(ValueError):
    """A currency code that is not in :data:`CURRENCY_EXPONENTS`."""

    def __init__(self, currency: str) -> None:
        super().__init__(
            f"unknown currency {currency!r}: not in ledger.currencies "
            f"(known: {', '.join(sorted(CURRENCY_EXPONENTS))})"
        )
        self.currency = currency


class InexactAmountError(ValueError):
    """An amount with more fractional digits than its currency has minor units."""


def exponent(currency: str) -> int:
    """The number of minor-unit digits of ``currency``.

    Args:
        currency: an ISO code in any case (Stripe sends ``usd``, Plaid ``USD``).

    Returns:
        0 for JPY-like, 2 for USD-like, 3 for KWD-like currencies.

    Raises:
        UnknownCurrencyError: the code is not a known currency.
    """
    try:
        return CURRENCY_EXPONENTS[currency.lower()]
    except KeyError:
        raise UnknownCurrencyError(currency) from None


def _scaled(amount: Decimal | int, currency: str) -> Decimal:
    # bool is an int subclass and float would smuggle binary rounding in; both are rejected.
    if isinstance(amount, bool) or not isinstance(amount, Decimal | int):
        raise TypeError(f"amount must be a Decimal or int, not {type(amount).__name__}")
    value = Decimal(amount)
    if not value.is_finite():
        raise InexactAmountError(f"amount {amount!r} is not a finite number")
    return value.scaleb(exponent(currency))


def to_minor(amount: Decimal | int, currency: str) -> int:
    """Major units to minor units, rounding half-even at the currency's exponent.

    Args:
        amount: major units, e.g. ``Decimal("12.34")`` dollars.
        currency: the amount's currency.

    Returns:
        The integer count of minor units, e.g. ``1234``. ``Decimal("0.125")`` USD gives 12.

    Raises:
        TypeError: ``amount`` is a float (or another non-exact type).
        UnknownCurrencyError: the currency is unknown.
    """
    try:
        return int(_scaled(amount, currency).to_integral_value(rounding=ROUND_HALF_EVEN))
    except InvalidOperation as exc:  # pragma: no cover - only for absurd exponents
        raise InexactAmountError(f"amount {amount!r} cannot be scaled to minor units") from exc


def to_minor_exact(amount: Decimal | int, currency: str) -> int:
    """Major units to minor units, refusing any rounding.

    Use this where a provider promises exact amounts (Plaid): a value with too many decimals is
    bad input to quarantine, not something to round silently.

    Raises:
        InexactAmountError: ``amount`` has more decimals than the currency's exponent.
        TypeError: ``amount`` is a float.
        UnknownCurrencyError: the currency is unknown.
    """
    scaled = _scaled(amount, currency)
    if scaled != scaled.to_integral_value():
        raise InexactAmountError(
            f"{amount} {currency.upper()} has more than {exponent(currency)} decimal places"
        )
    return int(scaled)


def rounding_residual(amount: Decimal | int, currency: str) -> Decimal:
    """What :func:`to_minor` dropped, in major units (``amount - from_minor(to_minor(...))``).

    Reconciliation logs this pre-rounding delta separately from the rounded comparison.
    """
    return Decimal(amount) - from_minor(to_minor(amount, currency), currency)


def from_minor(minor: int, currency: str) -> Decimal:
    """Minor units to an exact Decimal in major units with the currency's exponent as scale.

    ``from_minor(1234, "usd") == Decimal("12.34")``; ``from_minor(5120, "kwd")`` is
    ``Decimal("5.120")``; ``from_minor(100, "jpy")`` is ``Decimal("100")``.
    """
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise TypeError(f"minor must be an int, not {type(minor).__name__}")
    return Decimal(minor).scaleb(-exponent(currency))
