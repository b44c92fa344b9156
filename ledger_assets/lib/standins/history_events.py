"""Stripe events for the last 30 days of the generated history.

Stripe keeps events for 30 days, so only activity in ``[now - 30 days, now)`` gets events. Each
event carries the object as it was at that moment (a ``charge.succeeded`` shows no refunds yet,
a ``charge.dispute.created`` shows ``needs_response``), rebuilt from the final rows:

* a charge's ``amount_refunded`` at time t is the sum of its refunds created up to t, and it is
  ``disputed`` once a dispute on it exists;
* a dispute opens as ``needs_response`` (``warning_needs_response`` for an inquiry) holding its
  withdrawal balance transaction, turns ``under_review`` when evidence is due, and a won
  dispute closes when its reinstatement balance transaction is created.

Two moments are not in the generator's rows and are approximated (see the report): when a lost
dispute closed (taken as 52 days after it opened, before the history's end) and when an inquiry
closed (30 days after it opened, the generator's own rule).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from ledger_assets.lib.standins.columns import NULL
from ledger_assets.lib.standins.stripe_store import Account
from ledger_assets.lib.standins.world import EVENT_RETENTION_S, World

DAY_S = 86_400
#: Assumed closing delay of a lost dispute (the generator draws 30-75 days, not kept).
LOST_CLOSES_AFTER_S = 52 * DAY_S
INQUIRY_CLOSES_AFTER_S = 30 * DAY_S


@dataclass
class _Pending:
    created: int
    account: int
    seq: int
    type: str
    #: The data object, or how to render it (only events that are kept get rendered).
    data: bytes | Callable[[], bytes]
    previous: bytes | None = None


def derive_history_events(world: World) -> None:
    """Append the events of the history's retained window to every account."""
    now = int(world.clock())
    lo, hi = now - EVENT_RETENTION_S, min(now, world.horizon)
    if lo >= hi:
        return
    pending: list[_Pending] = []
    for index, account in enumerate(world.accounts.values()):
        pending += _account_events(world, index, account, lo, hi)
    pending.sort(key=lambda p: (p.created, p.account, p.seq))
    numbers = world.take_ids("evt_", len(pending))
    accounts = list(world.accounts.values())
    by_account: dict[int, list[tuple[int, _Pending, bytes]]] = {}
    for number, p in zip(numbers.tolist(), pending, strict=True):
        account = accounts[p.account]
        data = p.data if isinstance(p.data, bytes) else p.data()
        body = world.event_body(number, account, p.type, p.created, data, p.previous)
        by_account.setdefault(p.account, []).append((number, p, body))
    for index, rows in by_account.items():
        world._append_events(
            accounts[index],
            np.array([r[0] for r in rows], np.int64),
            np.array([r[1].created for r in rows], np.int64),
            [r[1].type for r in rows],
            [r[2] for r in rows],
        )


def _account_events(world: World, index: int, account: Account, lo: int, hi: int) -> list[_Pending]:
    render = world.renderer.one
    status = world.catalog["status"]
    out: list[_Pending] = []

    def add(
        created: int, kind: str, make: bytes | Callable[[], bytes], prev: bytes | None = None
    ) -> None:
        if lo <= created < hi:
            out.append(_Pending(created, index, len(out), kind, make, prev))

    ch, re, dp, po = (account.tables[n] for n in ("charges", "refunds", "disputes", "payouts"))
    bts = account.tables["balance_transactions"]
    dispute_opened = {int(c): int(t) for c, t in zip(dp["charge"], dp["created"], strict=True)}

    def charge_at(row: int, t: int, refunded: int) -> Callable[[], bytes]:
        number = int(ch["id"][row])
        disputed = dispute_opened.get(number, t + 1) <= t
        full = refunded == int(ch["amount"][row])
        return lambda: render(
            account, "charges", row, amount_refunded=refunded, refunded=full, disputed=disputed
        )

    # New charges are most of the events: rendered in one pass, as they were when created.
    failed = status.code("failed")
    rows = np.arange(np.searchsorted(ch["created"], lo), np.searchsorted(ch["created"], hi))
    fresh = ch.take(rows)
    fresh["amount_refunded"][:] = 0
    fresh["refunded"][:] = False
    fresh["disputed"][:] = False
    bodies = world.renderer.render(account, "charges", fresh)
    kinds = np.where(fresh["status"] == failed, "charge.failed", "charge.succeeded").tolist()
    for t, kind, body in zip(fresh["created"].tolist(), kinds, bodies, strict=True):
        add(t, kind, body)

    cumulative: dict[int, int] = {}
    for row in range(len(re)):
        t, charge = int(re["created"][row]), int(re["charge"][row])
        cumulative[charge] = cumulative.get(charge, 0) + int(re["amount"][row])
        if t < lo:
            continue
        add(t, "refund.created", partial(render, account, "refunds", row))
        charge_row = account.row_of("charges", charge)
        assert charge_row is not None
        add(t, "charge.refunded", charge_at(charge_row, t, cumulative[charge]))

    codes = {
        name: status.code(name)
        for name in (
            "needs_response",
            "warning_needs_response",
            "under_review",
            "won",
            "lost",
            "warning_closed",
        )
    }
    for row in range(len(dp)):
        opened, final = int(dp["created"][row]), int(dp["status"][row])
        if opened >= hi:
            continue
        due = int(dp["evidence_due_by"][row])
        inquiry = final in (codes["warning_needs_response"], codes["warning_closed"])

        def snap(code: int, with_second: bool, row: int = row) -> Callable[[], bytes]:
            bt2 = int(dp["bt2"][row]) if with_second else NULL
            return lambda: render(account, "disputes", row, status=code, bt2=bt2)

        first = codes["warning_needs_response"] if inquiry else codes["needs_response"]
        add(opened, "charge.dispute.created", snap(first, False))
        if inquiry:
            if final == codes["warning_closed"]:
                add(opened + INQUIRY_CLOSES_AFTER_S, "charge.dispute.closed", snap(final, False))
            continue
        add(opened, "charge.dispute.funds_withdrawn", snap(first, False))
        if final == first:
            continue
        add(
            due,
            "charge.dispute.updated",
            snap(codes["under_review"], False),
            b'{"status":"needs_response"}',
        )
        if final == codes["won"]:
            bt_row = account.row_of("balance_transactions", int(dp["bt2"][row]))
            assert bt_row is not None
            decided = int(bts["created"][bt_row])
            add(
                decided,
                "charge.dispute.funds_reinstated",
                snap(final, True),
                b'{"status":"under_review"}',
            )
            add(decided, "charge.dispute.closed", snap(final, True), b'{"status":"under_review"}')
        elif final == codes["lost"]:
            closed = min(opened + LOST_CLOSES_AFTER_S, world.horizon - 1)
            add(closed, "charge.dispute.closed", snap(final, False), b'{"status":"under_review"}')

    paid = status.code("paid")
    for row in range(len(po)):
        arrival = int(po["arrival_date"][row])
        if int(po["status"][row]) == paid:
            add(arrival, "payout.paid", partial(render, account, "payouts", row))
    return out
