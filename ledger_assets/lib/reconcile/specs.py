"""What is summed per mirrored table, as SQL that means the same in Postgres and in DuckDB.

Every table is compared per (tenant, local day, currency, category) on four integers: the row
count and three money *slots*, ``amount``, ``fee`` and ``net`` (the columns of the results
contract, ``marts.contracts.RECONCILIATION_RESULTS``). Which column fills which slot is decided
here, once:

=============================  ==================  ===============  ===============  ===========
table                          category            amount           fee              net
=============================  ==================  ===============  ===============  ===========
stripe_balance_transactions    reporting_category  amount           fee              net
stripe_charges                 status              amount           amount_refunded  amount_captured
stripe_refunds                 status              amount           0                0
stripe_disputes                status              amount           0                0
stripe_payouts                 status              amount           0                0
plaid_transactions             pending / posted    amount, rounded  0                amount_minor
=============================  ==================  ===============  ===============  ===========

Charges use three different columns so that a change to any of them moves a total. Plaid's
``amount`` is Plaid's exact decimal (``numeric(20,4)``): it is turned into minor units at this
boundary, rounded half-even (the project's rule; both engines' ``round`` break ties away from
zero, so the rounding is spelled out), and the pre-rounding remainder is summed separately as
``delta``, which is reported and never compared. Balance transactions carry no fraction to
round: ``amount``/``fee``/``net`` are already settlement-currency integers, and
``exchange_rate`` relates them to the charge's presentment currency, which a per-currency
total cannot use.

The expressions below are SQL over the row alias ``t`` and, where a spec needs the currency's
minor-unit scale, ``c.scale`` (10 ** exponent); they are constants of this module, never input.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger_assets.lib.sor.catalog import MIRRORED_TABLES, MirroredTable


def half_even(exact: str) -> str:
    """``exact`` (a decimal SQL expression) rounded half-even to an integer, in portable SQL."""
    whole = f"cast(floor({exact}) as bigint)"
    part = f"({exact} - floor({exact}))"
    return (
        f"({whole} + case when {part} > 0.5 then 1 when {part} < 0.5 then 0 "
        f"when mod({whole}, 2) <> 0 then 1 else 0 end)"
    )


@dataclass(frozen=True)
class MeasureSpec:
    """The category and the three money slots of one table (see the module table)."""

    table: MirroredTable
    category: str
    amount: str
    fee: str
    net: str
    #: The exact (pre-rounding) value of ``amount`` in minor units, when ``amount`` is rounded.
    exact_amount: str | None = None

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def needs_scale(self) -> bool:
        return self.exact_amount is not None

    @property
    def delta(self) -> str:
        """The pre-rounding remainder of one row (0 for integer-only tables)."""
        if self.exact_amount is None:
            return "0"
        return f"({self.exact_amount} - {self.amount})"


_PLAID_EXACT = "(t.amount * c.scale)"

_BY_NAME: dict[str, tuple[str, str, str, str, str | None]] = {
    "stripe_balance_transactions": ("t.reporting_category", "t.amount", "t.fee", "t.net", None),
    "stripe_charges": ("t.status", "t.amount", "t.amount_refunded", "t.amount_captured", None),
    "stripe_refunds": ("t.status", "t.amount", "0", "0", None),
    "stripe_disputes": ("t.status", "t.amount", "0", "0", None),
    "stripe_payouts": ("t.status", "t.amount", "0", "0", None),
    "plaid_transactions": (
        "case when t.pending then 'pending' else 'posted' end",
        half_even(_PLAID_EXACT),
        "0",
        "t.amount_minor",
        _PLAID_EXACT,
    ),
}

#: One spec per mirrored table, in catalog order.
SPECS: dict[str, MeasureSpec] = {
    table.name: MeasureSpec(table, *_BY_NAME[table.name]) for table in MIRRORED_TABLES
}
