"""Vectorised, seeded generation of the system of record, one tenant at a time.

Every tenant draws from its own random stream (``default_rng([seed, tenant_id])``), so its rows
do not depend on how other tenants were generated; ids are counters handed out in load order
(tenant by tenant, time-ordered within a tenant), so primary keys and the ``(tenant_id, time)``
indexes grow at their right edge while loading.

Stripe's identities hold by construction, in integers:

* balance transaction ``net = amount - fee`` and ``fee = sum(fee_details[].amount)``;
* a charge's ``amount_refunded`` is the sum of its refunds, ``refunded`` iff it equals
  ``amount``; a disputed charge has ``disputed = true``;
* a dispute's withdrawal BT is ``-amount`` with a dispute fee, a won dispute adds a
  ``dispute_reversal`` BT of ``+amount``; ``dispute.balance_transactions`` lists their ids;
* automatic daily payouts: ``payout.amount`` is the sum of ``net`` of the BTs whose ``payout``
  names it, and the payout's own BT (type ``payout``, ``payout`` column NULL so the sum above
  needs no filter) has ``amount = -payout.amount``.

Amounts of 3-decimal currencies (KWD, BHD) are multiples of 10 on the Stripe side, as Stripe
requires; Plaid amounts are exact decimals with the currency's exponent.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ledger_assets.lib.localtime import local_midnight
from ledger_assets.lib.money import exponent
from ledger_assets.lib.synth.ids import encode_ids, id_width
from ledger_assets.lib.synth.pgcopy import Column, ColumnValues, Kind
from ledger_assets.lib.synth.spec import COVERAGE, POPULATION, USD_MINOR, SeedSpec

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]

DAY_S = 86_400
#: Rows per Stripe charge in the other Stripe tables (BTs, refunds, disputes) and per tenant-day
#: (payouts), used to turn ``target_rows`` into a charge rate; measured on generated data.
_ROWS_PER_CHARGE_STRIPE = 2.08
_ROWS_PER_TENANT_DAY = 1.9


def _id(prefix: str) -> Column:
    return Column("id", Kind.FIXED_TEXT, id_width(prefix))


def _ref(name: str, prefix: str, nullable: bool = False) -> Column:
    kind = Kind.NULLABLE_FIXED_TEXT if nullable else Kind.FIXED_TEXT
    return Column(name, kind, id_width(prefix))


#: The columns the generator fills, per table, in FK order. Columns left out take their
#: defaults (metadata '{}', livemode false, ingested_at now()).
TABLES: dict[str, list[Column]] = {
    "tenants": [
        Column("tenant_id", Kind.INT4),
        Column("name", Kind.TEXT),
        Column("time_zone", Kind.TEXT),
        Column("default_currency", Kind.FIXED_TEXT, 3),
        _ref("stripe_account_id", "acct_"),
        Column("created_at", Kind.TIMESTAMPTZ),
    ],
    "stripe_charges": [
        _id("ch_"),
        Column("tenant_id", Kind.INT4),
        Column("amount", Kind.INT8),
        Column("amount_captured", Kind.INT8),
        Column("amount_refunded", Kind.INT8),
        Column("currency", Kind.FIXED_TEXT, 3),
        Column("status", Kind.TEXT),
        Column("paid", Kind.BOOL),
        Column("captured", Kind.BOOL),
        Column("refunded", Kind.BOOL),
        Column("disputed", Kind.BOOL),
        _ref("balance_transaction", "txn_", nullable=True),
        _ref("payment_intent", "pi_"),
        _ref("customer", "cus_", nullable=True),
        Column("description", Kind.TEXT),
        Column("created", Kind.TIMESTAMPTZ),
        Column("source_ts", Kind.TIMESTAMPTZ),
    ],
    "stripe_refunds": [
        _id("re_"),
        Column("tenant_id", Kind.INT4),
        _ref("charge", "ch_"),
        Column("amount", Kind.INT8),
        Column("currency", Kind.FIXED_TEXT, 3),
        Column("status", Kind.TEXT),
        Column("reason", Kind.TEXT),
        _ref("balance_transaction", "txn_"),
        Column("created", Kind.TIMESTAMPTZ),
        Column("source_ts", Kind.TIMESTAMPTZ),
    ],
    "stripe_disputes": [
        _id("dp_"),
        Column("tenant_id", Kind.INT4),
        _ref("charge", "ch_"),
        Column("amount", Kind.INT8),
        Column("currency", Kind.FIXED_TEXT, 3),
        Column("reason", Kind.TEXT),
        Column("status", Kind.TEXT),
        Column("evidence_due_by", Kind.TIMESTAMPTZ),
        Column("balance_transactions", Kind.TEXT_ARRAY),
        Column("created", Kind.TIMESTAMPTZ),
        Column("source_ts", Kind.TIMESTAMPTZ),
    ],
    "stripe_payouts": [
        _id("po_"),
        Column("tenant_id", Kind.INT4),
        Column("amount", Kind.INT8),
        Column("currency", Kind.FIXED_TEXT, 3),
        Column("status", Kind.TEXT),
        Column("arrival_date", Kind.TIMESTAMPTZ),
        Column("automatic", Kind.BOOL),
        _ref("balance_transaction", "txn_"),
        Column("reconciliation_status", Kind.TEXT),
        Column("created", Kind.TIMESTAMPTZ),
        Column("source_ts", Kind.TIMESTAMPTZ),
    ],
    "stripe_balance_transactions": [
        _id("txn_"),
        Column("tenant_id", Kind.INT4),
        Column("amount", Kind.INT8),
        Column("fee", Kind.INT8),
        Column("net", Kind.INT8),
        Column("currency", Kind.FIXED_TEXT, 3),
        Column("fee_details", Kind.JSONB),
        Column("type", Kind.TEXT),
        Column("reporting_category", Kind.TEXT),
        # ch_, re_, dp_ and po_ have the same width, so source is fixed-width too.
        _ref("source", "ch_"),
        Column("status", Kind.TEXT),
        _ref("payout", "po_", nullable=True),
        Column("available_on", Kind.TIMESTAMPTZ),
        Column("created", Kind.TIMESTAMPTZ),
        Column("source_ts", Kind.TIMESTAMPTZ),
    ],
    "plaid_items": [
        Column("item_id", Kind.FIXED_TEXT, id_width("item_")),
        Column("tenant_id", Kind.INT4),
        Column("institution_id", Kind.TEXT),
        Column("institution_name", Kind.TEXT),
        Column("created_at", Kind.TIMESTAMPTZ),
    ],
    "plaid_accounts": [
        Column("account_id", Kind.FIXED_TEXT, id_width("acc_")),
        Column("tenant_id", Kind.INT4),
        Column("item_id", Kind.FIXED_TEXT, id_width("item_")),
        Column("name", Kind.TEXT),
        Column("official_name", Kind.TEXT),
        Column("mask", Kind.FIXED_TEXT, 4),
        Column("type", Kind.TEXT),
        Column("subtype", Kind.TEXT),
        Column("currency", Kind.FIXED_TEXT, 3),
        Column("created_at", Kind.TIMESTAMPTZ),
    ],
    "plaid_transactions": [
        Column("transaction_id", Kind.FIXED_TEXT, id_width("ptx_")),
        Column("tenant_id", Kind.INT4),
        Column("item_id", Kind.FIXED_TEXT, id_width("item_")),
        Column("account_id", Kind.FIXED_TEXT, id_width("acc_")),
        Column("amount", Kind.NUMERIC_E4),
        Column("amount_minor", Kind.INT8),
        Column("currency", Kind.FIXED_TEXT, 3),
        Column("date", Kind.DATE),
        Column("authorized_date", Kind.NULLABLE_DATE),
        Column("datetime", Kind.NULLABLE_TIMESTAMPTZ),
        Column("name", Kind.TEXT),
        Column("merchant_name", Kind.TEXT),
        Column("payment_channel", Kind.TEXT),
        Column("category_primary", Kind.TEXT),
        Column("category_detailed", Kind.TEXT),
        Column("pending", Kind.BOOL),
        _ref("pending_transaction_id", "ptx_", nullable=True),
    ],
}

_REFUND_REASONS: list[str | None] = ["requested_by_customer", "duplicate", "fraudulent", None]
_DISPUTE_REASONS = [
    "fraudulent", "product_not_received", "duplicate", "subscription_canceled",
    "credit_not_processed", "general", "product_unacceptable",
]  # fmt: skip
_DESCRIPTIONS: list[str | None] = ["Order", "Subscription renewal", "Invoice payment", None]
_INSTITUTIONS = [
    ("ins_109508", "First Platypus Bank"),
    ("ins_109509", "Tartan Bank"),
    ("ins_109510", "Houndstooth Bank"),
    ("ins_109511", "Tattersall Federal Credit Union"),
]
#: Bank transaction kinds: name, merchant, channel, category, detailed category, outflow?,
#: median size in USD cents.
_MERCHANTS: list[tuple[str, str | None, str, str, str, bool, int]] = [
    ("AMZN Mktp US", "Amazon", "online", "GENERAL_MERCHANDISE",
     "GENERAL_MERCHANDISE_ONLINE_MARKETPLACES", True, 6_000),
    ("UBER *TRIP", "Uber", "online", "TRANSPORTATION", "TRANSPORTATION_TAXIS_AND_RIDE_SHARES",
     True, 2_500),
    ("AWS EMEA", "Amazon Web Services", "online", "GENERAL_SERVICES",
     "GENERAL_SERVICES_OTHER_GENERAL_SERVICES", True, 30_000),
    ("OFFICE DEPOT #1123", "Office Depot", "in store", "GENERAL_MERCHANDISE",
     "GENERAL_MERCHANDISE_OFFICE_SUPPLIES", True, 8_000),
    ("PAYROLL ACH", None, "other", "TRANSFER_OUT", "TRANSFER_OUT_ACCOUNT_TRANSFER", True,
     250_000),
    ("STRIPE TRANSFER", "Stripe", "other", "TRANSFER_IN", "TRANSFER_IN_ACCOUNT_TRANSFER",
     False, 150_000),
    ("CLIENT WIRE", None, "other", "INCOME", "INCOME_OTHER_INCOME", False, 400_000),
    ("INTEREST PAYMENT", None, "other", "INCOME", "INCOME_INTEREST_EARNED", False, 500),
]  # fmt: skip
_MERCHANT_WEIGHTS = np.array([20, 15, 6, 10, 4, 25, 5, 3], dtype=np.float64)
_ACCOUNT_KINDS = [
    ("Business Checking", "Platypus Business Checking", "depository", "checking"),
    ("Business Credit Card", "Platypus Business Platinum Card", "credit", "credit card"),
    ("Business Savings", "Platypus High-Yield Savings", "depository", "savings"),
]


def _text(values: Sequence[str | None], codes: npt.NDArray[np.generic]) -> pa.Array:
    """A categorical text column: ``values[codes]`` built by Arrow (no per-row Python)."""
    return pa.array(values, pa.string()).take(pa.array(np.asarray(codes, dtype=np.int32)))


def _const_text(value: str, n: int) -> pa.Array:
    return _text([value], np.zeros(n, dtype=np.int32))


def _const_bytes(value: str, n: int) -> npt.NDArray[np.uint8]:
    return np.broadcast_to(np.frombuffer(value.encode("ascii"), dtype=np.uint8), (n, len(value)))


def _round_to(values: I64, granularity: int) -> I64:
    """Round to a multiple of ``granularity`` (half up; inputs are positive)."""
    if granularity == 1:
        return values
    return ((values + granularity // 2) // granularity) * granularity


def _half_even_div(numerator: I64, denominator: int) -> I64:
    q, r = np.divmod(numerator, denominator)
    twice = 2 * r
    up = (twice > denominator) | ((twice == denominator) & (q % 2 == 1))
    return np.asarray(q + up, dtype=np.int64)


@dataclass
class Batch:
    """Rows of one table, column-wise, ready for :class:`~.pgcopy.Encoder`."""

    table: str
    rows: int
    values: dict[str, ColumnValues]


@dataclass
class Counters:
    """Next counter per id prefix; ids are handed out in load order."""

    next: dict[str, int] = field(default_factory=dict)

    def take(self, prefix: str, count: int) -> int:
        """Reserve ``count`` consecutive numbers and return the first."""
        first = self.next.get(prefix, 0)
        self.next[prefix] = first + count
        return first


@dataclass(frozen=True)
class Tenant:
    """One tenant's fixed attributes."""

    tenant_id: int
    zone: str
    currency: str
    charges_per_day: float


class _Calendar:
    """Local-day boundaries of one zone as Unix seconds: ``starts[d]`` is day ``d``'s midnight."""

    def __init__(self, zone: str, first: date, days: int) -> None:
        self.starts: I64 = np.array(
            [
                int(local_midnight(first + timedelta(days=d), zone).timestamp())
                for d in range(days + 1)
            ],
            dtype=np.int64,
        )

    def day_of(self, instants: I64) -> I64:
        """Local day index of each instant (may be >= days for instants past the window)."""
        return np.searchsorted(self.starts, instants, side="right").astype(np.int64) - 1


class Generator:
    """Generates a :class:`SeedSpec`'s rows as a stream of :class:`Batch` es.

    Args:
        spec: what to generate.
    """

    def __init__(self, spec: SeedSpec) -> None:
        self.spec = spec
        self.counters = Counters()
        self._calendars: dict[str, _Calendar] = {}
        # Windows run a few days past the end so that "available in two days" has a midnight.
        self._cal_days = spec.days + 8
        self.tenants = self._tenants()
        weekday = np.array([1.0, 1.05, 1.05, 1.1, 1.15, 0.75, 0.6])
        dows = (np.arange(spec.days) + spec.start.weekday()) % 7
        trend = np.linspace(0.75, 1.25, spec.days)
        factors = weekday[dows] * trend
        self._day_factors: F64 = factors / factors.mean()

    # ------------------------------------------------------------------ tenants

    def _tenants(self) -> list[Tenant]:
        spec = self.spec
        rng = np.random.default_rng([spec.seed, 0])
        sizes = rng.lognormal(0.0, spec.tenant_size_sigma, spec.tenants)
        # Cap the largest tenant (a bounded batch) at 3 sigma above the median.
        sizes = np.minimum(sizes, np.exp(3 * spec.tenant_size_sigma))
        sizes /= sizes.sum()
        weights = np.array([w for _, _, w in POPULATION])
        picks = rng.choice(len(POPULATION), size=spec.tenants, p=weights / weights.sum())
        plaid_rows = spec.plaid_per_charge
        per_charge = _ROWS_PER_CHARGE_STRIPE + plaid_rows
        fixed = _ROWS_PER_TENANT_DAY * spec.tenants * spec.days
        charges_total = max(spec.target_rows - fixed, spec.target_rows * 0.2) / per_charge
        tenants = []
        for i in range(spec.tenants):
            if i < len(COVERAGE):
                zone, currency = COVERAGE[i]
            else:
                zone, currency, _ = POPULATION[int(picks[i])]
            tenants.append(
                Tenant(i + 1, zone, currency, float(charges_total * sizes[i] / spec.days))
            )
        return tenants

    def _calendar(self, zone: str) -> _Calendar:
        if zone not in self._calendars:
            self._calendars[zone] = _Calendar(zone, self.spec.start, self._cal_days)
        return self._calendars[zone]

    def tenants_batch(self) -> Batch:
        """The ``tenants`` rows."""
        n = len(self.tenants)
        first = self.counters.take("acct_", n)
        created = int(datetime.combine(self.spec.start, datetime.min.time(), UTC).timestamp())
        return Batch(
            "tenants",
            n,
            {
                "tenant_id": np.array([t.tenant_id for t in self.tenants], dtype=np.int32),
                "name": pa.array([f"Merchant {t.tenant_id:05d}" for t in self.tenants]),
                "time_zone": pa.array([t.zone for t in self.tenants]),
                "default_currency": np.frombuffer(
                    "".join(t.currency for t in self.tenants).encode(), dtype=np.uint8
                ).reshape(n, 3),
                "stripe_account_id": encode_ids("acct_", np.arange(first, first + n)),
                "created_at": np.full(n, created - 400 * DAY_S, dtype=np.int64),
            },
        )

    def batches(self) -> Iterator[Batch]:
        """All rows: the tenants, then every tenant's tables in FK order, tenant by tenant."""
        yield self.tenants_batch()
        for tenant in self.tenants:
            yield from self.tenant_batches(tenant)

    # ------------------------------------------------------------------ one tenant

    def tenant_batches(self, tenant: Tenant) -> list[Batch]:
        """Every row of one tenant, as batches in FK order."""
        spec = self.spec
        rng = np.random.default_rng([spec.seed, tenant.tenant_id])
        cal = self._calendar(tenant.zone)
        horizon = int(cal.starts[spec.days])
        cur = tenant.currency
        gran = 10 if exponent(cur) == 3 else 1
        usd = USD_MINOR[cur] / 100.0

        # --- charges: Poisson per day, afternoon-heavy times inside the local day window.
        counts = rng.poisson(tenant.charges_per_day * self._day_factors)
        n = int(counts.sum())
        day = np.repeat(np.arange(spec.days), counts)
        length = cal.starts[day + 1] - cal.starts[day]
        created = np.sort(cal.starts[day] + (rng.beta(2.2, 1.8, n) * length).astype(np.int64))
        cents = np.clip(rng.lognormal(np.log(3_500), 1.0, n), 50, 2_000_000)
        amount = _round_to(np.maximum(np.rint(cents * usd).astype(np.int64), gran), gran)
        failed = rng.random(n) < spec.failed_rate
        ok = ~failed
        fixed_fee = round(30 * usd)
        fee = _round_to(_half_even_div(amount * 29, 1000) + fixed_fee, gran)
        # VAT/GST charged on Stripe's fee shows as a separate fee_details line in these regions.
        tax = _round_to(fee // 6, gran) if cur in {"eur", "gbp", "aud", "nzd"} else None
        ch_first = self.counters.take("ch_", n)
        ch_num = np.arange(ch_first, ch_first + n, dtype=np.int64)

        # --- refunds: full or partial, sometimes two partials, days after the charge.
        r_idx = np.flatnonzero(ok & (rng.random(n) < spec.refund_rate))
        full = rng.random(len(r_idx)) < 0.6
        part1 = _round_to(
            np.maximum((amount[r_idx] * rng.uniform(0.1, 0.6, len(r_idx))).astype(np.int64), gran),
            gran,
        )
        amount1 = np.where(full, amount[r_idx], np.minimum(part1, amount[r_idx]))
        delay1 = 3_600 + rng.exponential(5 * DAY_S, len(r_idx)).astype(np.int64)
        second = ~full & (rng.random(len(r_idx)) < 0.25)
        amount2 = np.minimum(
            _round_to(np.maximum((amount[r_idx] * 0.3).astype(np.int64), gran), gran),
            amount[r_idx] - amount1,
        )
        second &= amount2 > 0
        delay2 = delay1 + 3_600 + rng.exponential(5 * DAY_S, len(r_idx)).astype(np.int64)
        re_charge = np.concatenate([r_idx, r_idx[second]])
        re_amount = np.concatenate([amount1, amount2[second]])
        re_created = np.concatenate(
            [created[r_idx] + delay1, created[r_idx[second]] + delay2[second]]
        )
        keep = re_created < horizon
        re_charge, re_amount, re_created = re_charge[keep], re_amount[keep], re_created[keep]
        order = np.argsort(re_created, kind="stable")
        re_charge, re_amount, re_created = re_charge[order], re_amount[order], re_created[order]
        n_re = len(re_charge)
        amount_refunded = np.zeros(n, dtype=np.int64)
        np.add.at(amount_refunded, re_charge, re_amount)
        re_reason = rng.integers(0, len(_REFUND_REASONS), n_re)

        # --- disputes: on unrefunded successful charges; a share arrive 91-180 days later.
        d_idx = np.flatnonzero(ok & (amount_refunded == 0) & (rng.random(n) < spec.dispute_rate))
        late = rng.random(len(d_idx)) < spec.late_dispute_share
        delay_days = np.where(
            late, rng.uniform(91, 180, len(d_idx)), rng.uniform(5, 89, len(d_idx))
        )
        dp_created = created[d_idx] + (delay_days * DAY_S).astype(np.int64)
        keep = dp_created < horizon
        d_idx, dp_created = d_idx[keep], dp_created[keep]
        order = np.argsort(dp_created, kind="stable")
        d_idx, dp_created = d_idx[order], dp_created[order]
        n_dp = len(d_idx)
        inquiry = rng.random(n_dp) < 0.05
        decided_at = dp_created + (rng.uniform(30, 75, n_dp) * DAY_S).astype(np.int64)
        decided = ~inquiry & (decided_at < horizon)
        won = decided & (rng.random(n_dp) < 0.35)
        evidence_due = dp_created + 21 * DAY_S
        dp_status = np.select(
            [inquiry & (dp_created + 30 * DAY_S < horizon), inquiry, won, decided,
             evidence_due > horizon],
            [0, 1, 2, 3, 4],
            5,
        )  # fmt: skip
        dp_status_names = ["warning_closed", "warning_needs_response", "won", "lost",
                           "needs_response", "under_review"]  # fmt: skip
        dispute_fee = _round_to(np.full(n_dp, round(1_500 * usd), dtype=np.int64), gran)
        disputed = np.zeros(n, dtype=bool)
        disputed[d_idx] = True
        dp_first = self.counters.take("dp_", n_dp)
        re_first = self.counters.take("re_", n_re)

        # --- balance transactions of charges, refunds and disputes, in time order.
        ch_ok = np.flatnonzero(ok)
        withdraw = np.flatnonzero(~inquiry)
        reinstate = np.flatnonzero(won)
        kind = np.concatenate([
            np.zeros(len(ch_ok), np.int8), np.ones(n_re, np.int8),
            np.full(len(withdraw), 2, np.int8), np.full(len(reinstate), 3, np.int8),
        ])  # fmt: skip
        bt_created = np.concatenate([created[ch_ok], re_created, dp_created[withdraw],
                                     decided_at[reinstate]])  # fmt: skip
        bt_amount = np.concatenate([amount[ch_ok], -re_amount, -amount[d_idx[withdraw]],
                                    amount[d_idx[reinstate]]])  # fmt: skip
        bt_fee = np.concatenate([fee[ch_ok], np.zeros(n_re, np.int64), dispute_fee[withdraw],
                                 np.zeros(len(reinstate), np.int64)])  # fmt: skip
        # Which object each BT belongs to (index into that object's arrays).
        owner = np.concatenate([ch_ok, np.arange(n_re), withdraw, reinstate])
        avail_day = cal.day_of(bt_created) + 2
        bt_net = bt_amount - bt_fee

        # --- automatic daily payouts sweep everything available, carrying a negative balance.
        per_day = np.rint(np.bincount(avail_day, weights=bt_net, minlength=self._cal_days)).astype(
            np.int64
        )  # exact: integer sums far below 2^53
        payout_of_day = np.full(self._cal_days, -1, dtype=np.int64)
        po_days: list[int] = []
        po_amounts: list[int] = []
        carry, since = 0, 0
        sums = per_day.tolist()
        for d in range(spec.days):
            carry += sums[d]
            if carry > 0:
                payout_of_day[since : d + 1] = len(po_days)
                po_days.append(d)
                po_amounts.append(carry)
                carry, since = 0, d + 1
        n_po = len(po_days)
        po_first = self.counters.take("po_", n_po)
        po_day = np.array(po_days, dtype=np.int64)
        po_amount = np.array(po_amounts, dtype=np.int64)
        po_created = cal.starts[po_day] + 3 * 3_600 + rng.integers(0, 1_800, n_po)
        po_arrival = cal.starts[po_day + 2]
        bt_payout = payout_of_day[avail_day]

        kind = np.concatenate([kind, np.full(n_po, 4, np.int8)])
        bt_created = np.concatenate([bt_created, po_created])
        bt_amount = np.concatenate([bt_amount, -po_amount])
        bt_fee = np.concatenate([bt_fee, np.zeros(n_po, np.int64)])
        bt_net = bt_amount - bt_fee
        owner = np.concatenate([owner, np.arange(n_po)])
        bt_available = np.concatenate([cal.starts[avail_day], po_created])
        bt_payout = np.concatenate([bt_payout, np.full(n_po, -1, np.int64)])
        order = np.argsort(bt_created, kind="stable")
        kind, bt_created, bt_amount, bt_fee, bt_net, owner, bt_available, bt_payout = (
            a[order] for a in (kind, bt_created, bt_amount, bt_fee, bt_net, owner, bt_available,
                               bt_payout)
        )  # fmt: skip
        n_bt = len(kind)
        bt_first = self.counters.take("txn_", n_bt)
        bt_num = np.arange(bt_first, bt_first + n_bt, dtype=np.int64)
        # The BT number of each object, by inverting "which object owns this BT".
        ch_bt = np.full(n, -1, dtype=np.int64)
        ch_bt[owner[kind == 0]] = bt_num[kind == 0]
        re_bt = np.empty(n_re, dtype=np.int64)
        re_bt[owner[kind == 1]] = bt_num[kind == 1]
        dp_bt1 = np.full(n_dp, -1, dtype=np.int64)
        dp_bt1[owner[kind == 2]] = bt_num[kind == 2]
        dp_bt2 = np.full(n_dp, -1, dtype=np.int64)
        dp_bt2[owner[kind == 3]] = bt_num[kind == 3]
        po_bt = np.empty(n_po, dtype=np.int64)
        po_bt[owner[kind == 4]] = bt_num[kind == 4]
        firsts = np.array([ch_first, re_first, dp_first, dp_first, po_first], dtype=np.int64)
        source = encode_ids("ch_", firsts[kind] + owner)
        # ch_, re_, dp_ and po_ share a width: only the two prefix letters differ.
        prefixes = np.frombuffer(b"chredpdppo", dtype=np.uint8).reshape(5, 2)
        source[:, :2] = prefixes[kind]

        batches = [
            self._charges(tenant, n, ch_num, amount, failed, amount_refunded, disputed, ch_bt,
                          created, rng),
            Batch("stripe_refunds", n_re, {
                "id": encode_ids("re_", np.arange(re_first, re_first + n_re)),
                "tenant_id": np.full(n_re, tenant.tenant_id, np.int32),
                "charge": encode_ids("ch_", ch_num[re_charge]),
                "amount": re_amount,
                "currency": _const_bytes(cur, n_re),
                "status": _const_text("succeeded", n_re),
                "reason": _text(_REFUND_REASONS, re_reason),
                "balance_transaction": encode_ids("txn_", re_bt),
                "created": re_created,
            }),
            Batch("stripe_disputes", n_dp, {
                "id": encode_ids("dp_", np.arange(dp_first, dp_first + n_dp)),
                "tenant_id": np.full(n_dp, tenant.tenant_id, np.int32),
                "charge": encode_ids("ch_", ch_num[d_idx]),
                "amount": amount[d_idx],
                "currency": _const_bytes(cur, n_dp),
                "reason": _text(_DISPUTE_REASONS, rng.integers(0, len(_DISPUTE_REASONS), n_dp)),
                "status": _text(dp_status_names, dp_status),
                "evidence_due_by": evidence_due,
                "balance_transactions": _bt_lists(dp_bt1, dp_bt2),
                "created": dp_created,
            }),
            Batch("stripe_payouts", n_po, {
                "id": encode_ids("po_", np.arange(po_first, po_first + n_po)),
                "tenant_id": np.full(n_po, tenant.tenant_id, np.int32),
                "amount": po_amount,
                "currency": _const_bytes(cur, n_po),
                "status": _text(["paid", "in_transit"], po_arrival > horizon),
                "arrival_date": po_arrival,
                "automatic": np.ones(n_po, dtype=bool),
                "balance_transaction": encode_ids("txn_", po_bt),
                "reconciliation_status": _text(["completed", "in_progress"], po_arrival > horizon),
                "created": po_created,
            }),
            Batch("stripe_balance_transactions", n_bt, {
                "id": encode_ids("txn_", bt_num),
                "tenant_id": np.full(n_bt, tenant.tenant_id, np.int32),
                "amount": bt_amount,
                "fee": bt_fee,
                "net": bt_net,
                "currency": _const_bytes(cur, n_bt),
                "fee_details": _fee_details(kind, bt_fee, cur, tax, owner),
                "type": _text(["charge", "refund", "adjustment", "adjustment", "payout"], kind),
                "reporting_category": _text(
                    ["charge", "refund", "dispute", "dispute_reversal", "payout"], kind),
                "source": source,
                "status": _text(["available", "pending"], bt_available > horizon),
                "payout": (encode_ids("po_", po_first + np.maximum(bt_payout, 0)), bt_payout >= 0),
                "available_on": bt_available,
                "created": bt_created,
            }),
        ]  # fmt: skip
        # Every Stripe row is a snapshot as of the end of the window (migration 0003's source_ts),
        # so any later event about the object counts as newer.
        for batch in batches:
            batch.values["source_ts"] = np.full(batch.rows, horizon, dtype=np.int64)
        batches += self._plaid(tenant, cal, rng, n)
        return batches

    def _charges(
        self,
        tenant: Tenant,
        n: int,
        ch_num: I64,
        amount: I64,
        failed: Mask,
        amount_refunded: I64,
        disputed: Mask,
        ch_bt: I64,
        created: I64,
        rng: np.random.Generator,
    ) -> Batch:
        ok = ~failed
        customers = max(1, n // 4)
        cus_first = self.counters.take("cus_", customers)
        return Batch("stripe_charges", n, {
            "id": encode_ids("ch_", ch_num),
            "tenant_id": np.full(n, tenant.tenant_id, np.int32),
            "amount": amount,
            "amount_captured": np.where(ok, amount, 0),
            "amount_refunded": amount_refunded,
            "currency": _const_bytes(tenant.currency, n),
            "status": _text(["succeeded", "failed"], failed),
            "paid": ok,
            "captured": ok,
            "refunded": ok & (amount_refunded == amount),
            "disputed": disputed,
            "balance_transaction": (encode_ids("txn_", np.maximum(ch_bt, 0)), ch_bt >= 0),
            "payment_intent": encode_ids("pi_", ch_num),
            "customer": (encode_ids("cus_", cus_first + rng.integers(0, customers, n)),
                         rng.random(n) >= 0.1),
            "description": _text(_DESCRIPTIONS, rng.integers(0, len(_DESCRIPTIONS), n)),
            "created": created,
        })  # fmt: skip

    def _plaid(
        self, tenant: Tenant, cal: _Calendar, rng: np.random.Generator, charges: int
    ) -> list[Batch]:
        spec = self.spec
        cur = tenant.currency
        n_items = 1 + int(rng.random() < 0.4)
        item_first = self.counters.take("item_", n_items)
        inst = rng.integers(0, len(_INSTITUTIONS), n_items)
        accounts_per_item = rng.integers(1, 3, n_items)
        n_acc = int(accounts_per_item.sum())
        acc_item = np.repeat(np.arange(n_items), accounts_per_item)
        acc_kind = np.concatenate([np.arange(k) for k in accounts_per_item])
        acc_first = self.counters.take("acc_", n_acc)
        created_at = int(cal.starts[0]) - 30 * DAY_S
        masks = rng.integers(0, 10_000, n_acc)
        mask_bytes = np.array([list(f"{m:04d}".encode()) for m in masks], dtype=np.uint8)

        counts = rng.poisson(tenant.charges_per_day * spec.plaid_per_charge * self._day_factors)
        m = int(counts.sum())
        day = np.repeat(np.arange(spec.days), counts)
        merchant = rng.choice(
            len(_MERCHANTS), size=m, p=_MERCHANT_WEIGHTS / _MERCHANT_WEIGHTS.sum()
        )
        medians = np.array([row[6] for row in _MERCHANTS], dtype=np.float64)
        outflow = np.array([row[5] for row in _MERCHANTS])[merchant]
        usd = USD_MINOR[cur] / 100.0
        exp = exponent(cur)
        # Plaid amounts are not Stripe's: 3-decimal currencies may use the last digit.
        magnitude = np.maximum(
            np.rint(rng.lognormal(np.log(medians[merchant]), 0.8) * usd).astype(np.int64), 1
        )
        amount_minor = np.where(outflow, magnitude, -magnitude)  # Plaid: positive = money out
        account = rng.integers(0, n_acc, m)
        # Recent days are still pending at the horizon; older rows are posted, half of them
        # naming the pending row they replaced (removed from the table, as Plaid does).
        pending = (day >= spec.days - rng.integers(1, 6, m)) & (rng.random(m) < 0.7)
        linked = ~pending & (rng.random(m) < 0.5)
        taken = 1 + linked.astype(np.int64)
        tx_first = self.counters.take("ptx_", int(taken.sum()))
        tx_num = tx_first + np.cumsum(taken) - 1
        epoch_day = (spec.start - date(1970, 1, 1)).days + day
        auth_lag = rng.integers(0, 4, m)
        has_auth = rng.random(m) < 0.8
        has_time = rng.random(m) < 0.3
        auth_day = np.maximum(day - auth_lag, 0)
        auth_len = cal.starts[auth_day + 1] - cal.starts[auth_day]
        at = cal.starts[auth_day] + (rng.random(m) * auth_len).astype(np.int64)
        names = [row[0] for row in _MERCHANTS]
        return [
            Batch("plaid_items", n_items, {
                "item_id": encode_ids("item_", np.arange(item_first, item_first + n_items)),
                "tenant_id": np.full(n_items, tenant.tenant_id, np.int32),
                "institution_id": _text([i for i, _ in _INSTITUTIONS], inst),
                "institution_name": _text([name for _, name in _INSTITUTIONS], inst),
                "created_at": np.full(n_items, created_at, np.int64),
            }),
            Batch("plaid_accounts", n_acc, {
                "account_id": encode_ids("acc_", np.arange(acc_first, acc_first + n_acc)),
                "tenant_id": np.full(n_acc, tenant.tenant_id, np.int32),
                "item_id": encode_ids("item_", item_first + acc_item),
                "name": _text([k[0] for k in _ACCOUNT_KINDS], acc_kind),
                "official_name": _text([k[1] for k in _ACCOUNT_KINDS], acc_kind),
                "mask": mask_bytes.reshape(n_acc, 4),
                "type": _text([k[2] for k in _ACCOUNT_KINDS], acc_kind),
                "subtype": _text([k[3] for k in _ACCOUNT_KINDS], acc_kind),
                "currency": _const_bytes(cur, n_acc),
                "created_at": np.full(n_acc, created_at, np.int64),
            }),
            Batch("plaid_transactions", m, {
                "transaction_id": encode_ids("ptx_", tx_num),
                "tenant_id": np.full(m, tenant.tenant_id, np.int32),
                "item_id": encode_ids("item_", item_first + acc_item[account]),
                "account_id": encode_ids("acc_", acc_first + account),
                "amount": amount_minor * 10 ** (4 - exp),
                "amount_minor": amount_minor,
                "currency": _const_bytes(cur, m),
                "date": epoch_day,
                "authorized_date": (epoch_day - (day - auth_day), has_auth),
                "datetime": (at, has_auth & has_time),
                "name": _text(names, merchant),
                "merchant_name": _text([row[1] for row in _MERCHANTS], merchant),
                "payment_channel": _text([row[2] for row in _MERCHANTS], merchant),
                "category_primary": _text([row[3] for row in _MERCHANTS], merchant),
                "category_detailed": _text([row[4] for row in _MERCHANTS], merchant),
                "pending": pending,
                "pending_transaction_id": (encode_ids("ptx_", tx_num - 1), linked),
            }),
        ]  # fmt: skip


def _bt_lists(first: I64, second: I64) -> pa.Array:
    """``dispute.balance_transactions``: 0, 1 or 2 BT ids per dispute, in time order."""
    count = (first >= 0).astype(np.int32) + (second >= 0).astype(np.int32)
    offsets = np.zeros(len(first) + 1, dtype=np.int32)
    np.cumsum(count, out=offsets[1:])
    flat = np.empty(int(offsets[-1]), dtype=np.int64)
    flat[offsets[:-1][first >= 0]] = first[first >= 0]
    flat[offsets[:-1][second >= 0] + 1] = second[second >= 0]
    ids = encode_ids("txn_", flat)
    width = ids.shape[1]
    values = pa.Array.from_buffers(
        pa.string(),
        len(flat),
        [None, pa.py_buffer(np.arange(0, (len(flat) + 1) * width, width, dtype=np.int32)),
         pa.py_buffer(np.ascontiguousarray(ids))],
    )  # fmt: skip
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _fee_details(
    kind: npt.NDArray[np.generic],
    fee: I64,
    currency: str,
    tax: I64 | None,
    owner: I64,
) -> pa.Array:
    """fee_details JSON per BT; its amounts always sum to the BT's fee."""
    n = len(kind)
    charge_tax = np.zeros(n, dtype=np.int64)
    if tax is not None:
        is_charge = kind == 0
        charge_tax[is_charge] = tax[owner[is_charge]]
    stripe_part = fee - charge_tax
    cur = f'"currency":"{currency}"'
    stripe_fee = pc.binary_join_element_wise(
        '[{"amount":',
        pc.cast(pa.array(stripe_part), pa.string()),
        f',"application":null,{cur},"description":"Stripe processing fees","type":"stripe_fee"}}',
        "",
    )
    with_tax = pc.binary_join_element_wise(
        stripe_fee,
        ',{"amount":',
        pc.cast(pa.array(charge_tax), pa.string()),
        f',"application":null,{cur},"description":"Tax on Stripe fees","type":"tax"}}]',
        "",
    )
    charge = pc.if_else(
        pa.array(charge_tax > 0), with_tax, pc.binary_join_element_wise(stripe_fee, "]", "")
    )
    dispute = pc.binary_join_element_wise(
        '[{"amount":',
        pc.cast(pa.array(fee), pa.string()),
        f',"application":null,{cur},"description":"Dispute fee","type":"stripe_fee"}}]',
        "",
    )
    kinds = pa.array(kind.astype(np.int32))
    result = pc.if_else(pc.equal(kinds, 0), charge, pa.scalar("[]", pa.string()))
    return pc.if_else(pc.equal(kinds, 2), dispute, result)
