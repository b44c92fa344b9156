"""Pinning, incremental cycles, identities, seeding and rounding."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from ledger_assets.lib.lake.sync import LakeState, read_lake_state, write_lake_state
from ledger_assets.lib.reconcile import ReconcileScope
from tests.reconcile.conftest import INCREMENTAL, SPEC, Env


def test_a_change_not_yet_applied_is_in_flight_then_checked_next_cycle(env: Env) -> None:
    assert env.check(INCREMENTAL).status == "pass"
    (charge, tenant, day), *_ = env.sql(
        "select c.id, c.tenant_id, (c.created at time zone t.time_zone)::date"
        " from ledger.stripe_charges c join ledger.tenants t using (tenant_id)"
        " order by c.id desc limit 1"
    )
    env.sql("update ledger.stripe_charges set amount = amount + 5 where id = %s", (charge,))
    pending = env.check(INCREMENTAL)
    assert pending.status == "pass", pending.to_metadata()
    assert pending.keys_in_flight == 1
    assert ("stripe_charges", tenant, day) in pending.deferred
    env.sync()
    applied = env.check(INCREMENTAL)
    assert applied.status == "pass", applied.to_metadata()
    assert applied.keys_in_flight == 0
    assert ("stripe_charges", tenant, day) in applied.checked


def test_incremental_cycles_pick_changes_deferred_and_sweep(env: Env) -> None:
    full = env.check()
    # The sweep walks the calendar from the first day to tomorrow: about 10 days a cycle, so
    # four cycles cover the 30 days of data, and none covers them alone.
    calendar = (datetime.now(UTC).date() + timedelta(days=1) - SPEC.start).days + 1
    cycles = calendar // 10
    seen: set[tuple[str, int, object]] = set()
    for _ in range(4):
        report = env.check(INCREMENTAL, sweep_cycles=cycles)
        assert report.status == "pass", report.to_metadata()
        assert report.checked & full.checked < full.checked
        seen |= report.checked
    assert full.checked <= seen
    (charge, tenant, day), *_ = env.sql(
        "select c.id, c.tenant_id, (c.created at time zone t.time_zone)::date"
        " from ledger.stripe_charges c join ledger.tenants t using (tenant_id)"
        " order by c.id limit 1"
    )
    env.sql("update ledger.stripe_charges set amount = amount + 1 where id = %s", (charge,))
    env.sync()
    changed = env.check(INCREMENTAL, sweep_cycles=cycles)
    assert ("stripe_charges", tenant, day) in changed.checked


def test_partitions_scope_compares_only_those(env: Env) -> None:
    (tenant, day), *_ = env.sql(
        "select c.tenant_id, (c.created at time zone t.time_zone)::date"
        " from ledger.stripe_charges c join ledger.tenants t using (tenant_id) limit 1"
    )
    assert isinstance(tenant, int)
    assert isinstance(day, date)
    report = env.check(ReconcileScope("partitions", frozenset({(tenant, day)})))
    assert report.status == "pass"
    assert {(t, d) for _, t, d in report.checked} == {(tenant, day)}
    assert report.rows_compared > 0


def test_identity_violations_are_reported_with_their_ids(env: Env) -> None:
    (txn,), *_ = env.sql(
        "select id from ledger.stripe_balance_transactions where type = 'charge' limit 1"
    )
    (payout, amount), *_ = env.sql(
        "select id, amount from ledger.stripe_payouts where reconciliation_status = 'completed'"
        " and status = 'paid' limit 1"
    )
    env.sql("update ledger.stripe_balance_transactions set net = net + 1 where id = %s", (txn,))
    env.sql("update ledger.stripe_payouts set amount = amount + 3 where id = %s", (payout,))
    env.sync()
    report = env.check()
    assert report.status == "fail"
    assert report.mismatches == ()  # the lake equals Postgres; Postgres breaks the identity
    found = {(v.identity, v.key) for v in report.identity_violations}
    assert ("net = amount - fee", txn) in found
    assert ("payout = sum(balance transactions)", payout) in found
    assert ("payout transaction = -payout", payout) in found
    assert amount is not None


def test_a_payout_whose_transactions_are_not_ingested_yet_is_not_judged(env: Env) -> None:
    """A payout.paid webhook lands before the pull that brings its balance transactions."""
    (tenant,), *_ = env.sql("select min(tenant_id) from ledger.tenants")
    env.sql(
        "insert into ledger.stripe_payouts (id, tenant_id, amount, currency, status,"
        " arrival_date, balance_transaction, reconciliation_status, created)"
        " values ('po_early', %s, 5000, 'usd', 'paid', timestamptz '2025-02-20 00:00+00',"
        " 'txn_not_yet_pulled', 'completed', timestamptz '2025-02-19 12:00+00')",
        (tenant,),
    )
    env.sync()
    report = env.check()
    assert report.status == "pass", [v.to_json() for v in report.identity_violations]
    # Once its own transaction arrives (without the linked ones), it is judged and fails.
    env.sql(
        "insert into ledger.stripe_balance_transactions (id, tenant_id, amount, fee, net,"
        " currency, type, reporting_category, status, created, available_on)"
        " values ('txn_not_yet_pulled', %s, -5000, 0, -5000, 'usd', 'payout', 'payout',"
        " 'available', timestamptz '2025-02-19 12:00+00', timestamptz '2025-02-20 00:00+00')",
        (tenant,),
    )
    env.sync()
    found = {(v.identity, v.key) for v in env.check().identity_violations}
    assert ("payout = sum(balance transactions)", "po_early") in found


def test_a_payout_identity_is_judged_by_a_cycle_of_its_day_only(env: Env) -> None:
    """The payout's transactions lie on earlier days, outside the cycle's partitions."""
    (payout, tenant, day), *_ = env.sql(
        "select p.id, p.tenant_id, (p.created at time zone t.time_zone)::date"
        " from ledger.stripe_payouts p join ledger.tenants t using (tenant_id)"
        " where p.reconciliation_status = 'completed' and p.status = 'paid'"
        " and exists (select from ledger.stripe_balance_transactions b where b.payout = p.id"
        " and (b.created at time zone t.time_zone)::date"
        " < (p.created at time zone t.time_zone)::date)"
        " limit 1"
    )
    assert isinstance(tenant, int)
    assert isinstance(day, date)
    scope = ReconcileScope("partitions", frozenset({(tenant, day)}))
    assert env.check(scope).identity_violations == ()
    env.sql("update ledger.stripe_payouts set amount = amount + 3 where id = %s", (payout,))
    env.sync()
    report = env.check(scope)
    found = {(v.identity, v.key) for v in report.identity_violations}
    assert found == {
        ("payout = sum(balance transactions)", payout),
        ("payout transaction = -payout", payout),
    }


def test_a_seeding_lake_is_skipped(env: Env) -> None:
    state = read_lake_state(env.layout)
    assert state.applied_end is not None
    write_lake_state(
        env.layout, LakeState(state.applied_end, type(state.applied_end)(state.applied_end + 1))
    )
    report = env.check()
    assert report.status == "skipped"
    assert report.results_table().num_rows == 0


def test_the_rounding_delta_is_reported_and_never_fails(env: Env) -> None:
    (txn,), *_ = env.sql(
        "select transaction_id from ledger.plaid_transactions where currency = 'usd' limit 1"
    )
    env.sql(
        "update ledger.plaid_transactions set amount = amount + 0.0049 where transaction_id = %s",
        (txn,),
    )
    env.sync()
    report = env.check()
    assert report.status == "pass", report.to_metadata()
    assert Decimal(str(report.rounding_delta["plaid_transactions"])) == pytest.approx(
        Decimal("0.49")
    )
