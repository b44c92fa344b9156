"""Live activity: every tick appends new Stripe and Plaid changes and publishes them.

Tick ``k`` draws from ``default_rng([seed, LIVE_STREAM, k])``, so the sequence of changes (which
tenants, amounts, which old charge gets a late dispute, won or lost) is the same on every run of
the same seed; only the ``created`` timestamps follow the clock. Multi-step stories are
scheduled a fixed number of ticks ahead:

* charges (some failing) with their balance transactions; refunds of recent charges;
* LATE disputes on charges 90-180 days old: opened now with a withdrawal balance transaction,
  ``under_review`` 3 ticks later, decided 6 ticks later (won: a reinstatement balance
  transaction; lost: closed);
* payouts sweeping the available, unpaid balance transactions, paid 2 ticks later; payouts of
  the history still in transit are paid once their arrival date has passed;
* Plaid: pending transactions that post 3 ticks later (the pending one is removed, a posted
  one with ``pending_transaction_id`` is added), some modified before posting; the history's
  pending transactions post too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from ledger_assets.lib.localtime import zone
from ledger_assets.lib.money import exponent
from ledger_assets.lib.standins.columns import NULL
from ledger_assets.lib.standins.plaid_store import ADDED, MODIFIED, REMOVED, Item
from ledger_assets.lib.standins.stripe_store import Account
from ledger_assets.lib.standins.world import World
from ledger_assets.lib.synth.spec import USD_MINOR

LIVE_STREAM = 7_000_001
DAY_S = 86_400
_DISPUTE_REASONS = ["fraudulent", "product_not_received", "duplicate", "general"]
_REFUND_REASONS: list[str | None] = ["requested_by_customer", "duplicate", "fraudulent", None]
_TAXED = {"eur", "gbp", "aud", "nzd"}


@dataclass(frozen=True)
class LiveRates:
    """Expected changes per tick (Poisson means) and story lengths in ticks."""

    charges: float = 6.0
    refunds: float = 0.8
    late_disputes: float = 0.3
    payout_chance: float = 0.15
    plaid_pending: float = 2.0
    history_pending_posts: int = 2
    dispute_review_ticks: int = 3
    dispute_decision_ticks: int = 6
    dispute_won_share: float = 0.4
    payout_paid_ticks: int = 2
    plaid_post_ticks: int = 3
    plaid_modify_share: float = 0.1
    #: Seconds before a live balance transaction is available for a payout.
    availability_s: int = 20


@dataclass
class Live:
    """The live activity of a :class:`World`.

    Args:
        world: the state to change.
        seed: the seed of the tick streams.
        rates: how much happens per tick.
    """

    world: World
    seed: int
    rates: LiveRates = field(default_factory=LiveRates)
    ticks: int = 0
    _scheduled: dict[int, list[Callable[[], None]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    _touched_by_schedule: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        tenants = list(self.world.tenants.values())
        weights = np.array([self.world.tenant_weights[t.tenant_id] for t in tenants])
        self._tenants = tenants
        self._p = weights / weights.sum()
        self._items = sorted(self.world.plaid.items)
        # The history's still-pending bank transactions, oldest first, post a few per tick.
        self._history_pending = [
            (item_id, row)
            for item_id in self._items
            for row in np.flatnonzero(
                self.world.plaid.items[item_id].transactions["pending"]
            ).tolist()
        ]
        self._history_pending.reverse()

    def tick(self) -> None:
        """One step of activity, then the Plaid announcements for touched items."""
        k = self.ticks
        self.ticks += 1
        rng = np.random.default_rng([self.seed, LIVE_STREAM, k])
        touched: set[str] = set()
        for action in self._scheduled.pop(k, []):
            action()
        for _ in range(rng.poisson(self.rates.charges)):
            self._charge(rng, self._pick(rng))
        for _ in range(rng.poisson(self.rates.refunds)):
            self._refund(rng, self._pick(rng))
        for _ in range(rng.poisson(self.rates.late_disputes)):
            self._late_dispute(rng, self._pick(rng))
        for tenant in self._tenants:
            if rng.random() < self.rates.payout_chance:
                self._payout(self.world.account_of_tenant(tenant.tenant_id))
            self._arrive_history_payouts(self.world.account_of_tenant(tenant.tenant_id))
        for _ in range(rng.poisson(self.rates.plaid_pending)):
            item = self.world.plaid.items[self._items[int(rng.integers(len(self._items)))]]
            self._plaid_pending(rng, item)
            touched.add(item.item_id)
        touched |= self._post_history_pending()
        touched |= self._touched_by_schedule
        self._touched_by_schedule = set()
        for item_id in sorted(touched):
            self.world.publish_plaid(self.world.plaid.items[item_id])

    # ------------------------------------------------------------------------------ helpers

    def _pick(self, rng: np.random.Generator) -> Account:
        tenant = self._tenants[int(rng.choice(len(self._tenants), p=self._p))]
        return self.world.account_of_tenant(tenant.tenant_id)

    def _later(self, ticks: int, action: Callable[[], None]) -> None:
        self._scheduled[self.ticks - 1 + ticks].append(action)

    def _now(self, account: Account, resource: str) -> int:
        # created never goes backwards inside a table: list queries rely on the order.
        created = account.tables[resource]["created"]
        last = int(created[-1]) if len(created) else 0
        return max(int(self.world.clock()), last)

    def _append(self, account: Account, resource: str, **values: object) -> int:
        table = account.tables[resource]
        values.setdefault("created", self._now(account, resource))
        rows = table.extend({name: np.array([values[name]]) for name in table.names})
        return rows.start

    def _code(self, column: str, value: str | None) -> int:
        return self.world.catalog[column].code(value)

    def _emit(
        self, account: Account, kind: str, resource: str, row: int, previous: bytes | None = None
    ) -> None:
        snapshot = self.world.renderer.one(account, resource, row)
        self.world.emit(account, kind, self._now(account, "events"), snapshot, previous)

    def _bt(
        self,
        account: Account,
        amount: int,
        fee: int,
        fee_details: str,
        kind: str,
        category: str,
        source_kind: int,
        source: int,
        available: bool = False,
    ) -> int:
        now = self._now(account, "balance_transactions")
        number = int(self.world.take_ids("txn_")[0])
        self._append(
            account,
            "balance_transactions",
            id=number,
            created=now,
            amount=amount,
            fee=fee,
            net=amount - fee,
            currency=self._code("currency", account.tenant.currency),
            fee_details=self.world.catalog["fee_details"].code(fee_details),
            type=self._code("type", kind),
            reporting_category=self._code("reporting_category", category),
            source_kind=source_kind,
            source=source,
            status=self._code("status", "available" if available else "pending"),
            payout=NULL,
            available_on=now if available else now + self.rates.availability_s,
        )
        return number

    def _fee_line(self, amount: int, currency: str, description: str, kind: str) -> str:
        return (
            f'{{"amount":{amount},"application":null,"currency":"{currency}",'
            f'"description":"{description}","type":"{kind}"}}'
        )

    # ------------------------------------------------------------------------------- Stripe

    def _charge(self, rng: np.random.Generator, account: Account) -> None:
        cur = account.tenant.currency
        usd = USD_MINOR.get(cur, 100) / 100.0
        gran = 10 if exponent(cur) == 3 else 1
        amount = max(
            round(float(np.clip(rng.lognormal(np.log(3_500), 1.0), 50, 2e6)) * usd / gran) * gran,
            gran,
        )
        failed = bool(rng.random() < self.world.spec.failed_rate)
        number = int(self.world.take_ids("ch_")[0])
        bt = NULL
        if not failed:
            fee = round((amount * 29 / 1000 + round(30 * usd)) / gran) * gran
            tax = (fee // 6) // gran * gran if cur in _TAXED else 0
            lines = [self._fee_line(fee - tax, cur, "Stripe processing fees", "stripe_fee")]
            if tax:
                lines.append(self._fee_line(tax, cur, "Tax on Stripe fees", "tax"))
            bt = self._bt(
                account, amount, fee, f"[{','.join(lines)}]", "charge", "charge", 0, number
            )
        customer = int(self.world.take_ids("cus_")[0]) if rng.random() < 0.9 else NULL
        row = self._append(
            account,
            "charges",
            id=number,
            amount=amount,
            amount_captured=0 if failed else amount,
            amount_refunded=0,
            currency=self._code("currency", cur),
            status=self._code("status", "failed" if failed else "succeeded"),
            paid=not failed,
            captured=not failed,
            refunded=False,
            disputed=False,
            balance_transaction=bt,
            payment_intent=number,
            customer=customer,
            description=self._code("description", "Order"),
        )
        self._emit(account, "charge.failed" if failed else "charge.succeeded", "charges", row)

    def _refund(self, rng: np.random.Generator, account: Account) -> None:
        ch = account.tables["charges"]
        now = int(self.world.clock())
        start = int(np.searchsorted(ch["created"], now - 30 * DAY_S))
        ok = np.flatnonzero(
            (ch["status"][start:] == self._code("status", "succeeded"))
            & ~ch["disputed"][start:]
            & (ch["amount_refunded"][start:] < ch["amount"][start:])
        )
        if len(ok) == 0:
            return
        row = start + int(ok[rng.integers(len(ok))])
        cur = account.tenant.currency
        gran = 10 if exponent(cur) == 3 else 1
        left = int(ch["amount"][row] - ch["amount_refunded"][row])
        amount = (
            left
            if rng.random() < 0.6
            else max(gran, int(left * rng.uniform(0.1, 0.6)) // gran * gran)
        )
        number = int(self.world.take_ids("re_")[0])
        bt = self._bt(account, -amount, 0, "[]", "refund", "refund", 1, number)
        refund = self._append(
            account,
            "refunds",
            id=number,
            charge=int(ch["id"][row]),
            amount=amount,
            currency=self._code("currency", cur),
            status=self._code("status", "succeeded"),
            reason=self._code("reason", _REFUND_REASONS[int(rng.integers(len(_REFUND_REASONS)))]),
            balance_transaction=bt,
            failure_balance_transaction=NULL,
            payment_intent=int(ch["payment_intent"][row]),
        )
        ch["amount_refunded"][row] += amount
        ch["refunded"][row] = bool(ch["amount_refunded"][row] == ch["amount"][row])
        self._emit(account, "refund.created", "refunds", refund)
        self._emit(account, "charge.refunded", "charges", row)

    def _late_dispute(self, rng: np.random.Generator, account: Account) -> None:
        ch = account.tables["charges"]
        now = int(self.world.clock())
        lo, hi = np.searchsorted(ch["created"], [now - 180 * DAY_S, now - 90 * DAY_S])
        ok = np.flatnonzero(
            (ch["status"][lo:hi] == self._code("status", "succeeded"))
            & ~ch["disputed"][lo:hi]
            & (ch["amount_refunded"][lo:hi] == 0)
        )
        if len(ok) == 0:
            return
        row = int(lo) + int(ok[rng.integers(len(ok))])
        cur = account.tenant.currency
        gran = 10 if exponent(cur) == 3 else 1
        fee = round(1_500 * USD_MINOR.get(cur, 100) / 100.0 / gran) * gran
        amount = int(ch["amount"][row])
        number = int(self.world.take_ids("dp_")[0])
        details = f"[{self._fee_line(fee, cur, 'Dispute fee', 'stripe_fee')}]"
        bt1 = self._bt(account, -amount, fee, details, "adjustment", "dispute", 2, number)
        dispute = self._append(
            account,
            "disputes",
            id=number,
            charge=int(ch["id"][row]),
            amount=amount,
            currency=self._code("currency", cur),
            reason=self._code("reason", _DISPUTE_REASONS[int(rng.integers(len(_DISPUTE_REASONS)))]),
            status=self._code("status", "needs_response"),
            evidence_due_by=now + 21 * DAY_S,
            bt1=bt1,
            bt2=NULL,
            payment_intent=int(ch["payment_intent"][row]),
        )
        ch["disputed"][row] = True
        self._emit(account, "charge.dispute.created", "disputes", dispute)
        self._emit(account, "charge.dispute.funds_withdrawn", "disputes", dispute)
        won = bool(rng.random() < self.rates.dispute_won_share)
        self._later(self.rates.dispute_review_ticks, lambda: self._review(account, dispute))
        self._later(self.rates.dispute_decision_ticks, lambda: self._decide(account, dispute, won))

    def _review(self, account: Account, row: int) -> None:
        account.tables["disputes"]["status"][row] = self._code("status", "under_review")
        self._emit(
            account, "charge.dispute.updated", "disputes", row, b'{"status":"needs_response"}'
        )

    def _decide(self, account: Account, row: int, won: bool) -> None:
        dp = account.tables["disputes"]
        prev = b'{"status":"under_review"}'
        if won:
            amount = int(dp["amount"][row])
            dp["bt2"][row] = self._bt(
                account, amount, 0, "[]", "adjustment", "dispute_reversal", 2, int(dp["id"][row])
            )
            dp["status"][row] = self._code("status", "won")
            self._emit(account, "charge.dispute.funds_reinstated", "disputes", row, prev)
        else:
            dp["status"][row] = self._code("status", "lost")
        self._emit(account, "charge.dispute.closed", "disputes", row, prev)

    def _payout(self, account: Account) -> None:
        bts = account.tables["balance_transactions"]
        now = int(self.world.clock())
        start = int(np.searchsorted(bts["created"], self.world.horizon - 7 * DAY_S))
        due = start + np.flatnonzero(
            (bts["payout"][start:] == NULL)
            & (bts["available_on"][start:] <= now)
            & (bts["type"][start:] != self._code("type", "payout"))
        )
        total = int(bts["net"][due].sum())
        if len(due) == 0 or total <= 0:
            return
        number = int(self.world.take_ids("po_")[0])
        bt = self._bt(account, -total, 0, "[]", "payout", "payout", 3, number, available=True)
        bts["payout"][due] = number
        bts["status"][due] = self._code("status", "available")
        row = self._append(
            account,
            "payouts",
            id=number,
            amount=total,
            currency=self._code("currency", account.tenant.currency),
            status=self._code("status", "in_transit"),
            arrival_date=now + 60,
            automatic=True,
            balance_transaction=bt,
            reconciliation_status=self._code("reconciliation_status", "in_progress"),
        )
        self._later(self.rates.payout_paid_ticks, lambda: self._paid(account, row))

    def _paid(self, account: Account, row: int) -> None:
        po = account.tables["payouts"]
        po["status"][row] = self._code("status", "paid")
        po["reconciliation_status"][row] = self._code("reconciliation_status", "completed")
        self._emit(account, "payout.paid", "payouts", row)

    def _arrive_history_payouts(self, account: Account) -> None:
        po = account.tables["payouts"]
        now = int(self.world.clock())
        start = int(np.searchsorted(po["created"], self.world.horizon - 7 * DAY_S))
        for row in (
            start
            + np.flatnonzero(
                (po["status"][start:] == self._code("status", "in_transit"))
                & (po["arrival_date"][start:] <= now)
                & (po["created"][start:] < self.world.horizon)
            )
        ).tolist():
            self._paid(account, row)

    # -------------------------------------------------------------------------------- Plaid

    def _today(self, item: Item) -> tuple[int, int]:
        now = int(self.world.clock())
        tz = zone(self.world.tenants[item.tenant_id].zone)
        local = datetime.fromtimestamp(now, UTC).astimezone(tz).date()
        return now, (local - datetime(1970, 1, 1).date()).days

    def _plaid_pending(self, rng: np.random.Generator, item: Item) -> None:
        t = item.transactions
        if len(t) == 0:
            return
        template = int(rng.integers(len(t)))
        now, today = self._today(item)
        base = int(t["amount_minor"][template])
        amount = int(np.sign(base) or 1) * max(1, int(abs(base) * rng.uniform(0.5, 1.5)))
        number = int(self.world.take_ids("ptx_")[0])
        values = {name: t[name][template] for name in t.names}
        values.update(
            id=number,
            amount_minor=amount,
            date=today,
            authorized_date=today,
            datetime=now,
            pending=True,
            pending_transaction_id=NULL,
        )
        row = t.extend({name: np.array([value]) for name, value in values.items()}).start
        item.record(ADDED, row)
        item.apply_balances(row, 1)
        if rng.random() < self.rates.plaid_modify_share:
            self._later(1, lambda: self._plaid_modify(item, row))
        self._later(self.rates.plaid_post_ticks, lambda: self._plaid_post(item, row))

    def _plaid_modify(self, item: Item, row: int) -> None:
        t = item.transactions
        if not t["pending"][row]:
            return
        item.apply_balances(row, -1)
        # A tip or a final amount: pending details change before they settle.
        t["amount_minor"][row] += int(np.sign(t["amount_minor"][row])) * 100
        item.apply_balances(row, 1)
        item.record(MODIFIED, row)
        self._touched_by_schedule.add(item.item_id)

    def _plaid_post(self, item: Item, pending_row: int) -> None:
        t = item.transactions
        now, today = self._today(item)
        item.record(REMOVED, pending_row)
        item.apply_balances(pending_row, -1)
        values = {name: t[name][pending_row] for name in t.names}
        values.update(
            id=int(self.world.take_ids("ptx_")[0]),
            date=today,
            pending=False,
            pending_transaction_id=int(t["id"][pending_row]),
            datetime=now,
        )
        row = t.extend({name: np.array([value]) for name, value in values.items()}).start
        item.record(ADDED, row)
        item.apply_balances(row, 1)
        self._touched_by_schedule.add(item.item_id)

    def _post_history_pending(self) -> set[str]:
        touched: set[str] = set()
        for _ in range(min(self.rates.history_pending_posts, len(self._history_pending))):
            item_id, row = self._history_pending.pop()
            self._plaid_post(self.world.plaid.items[item_id], row)
            touched.add(item_id)
        return touched
