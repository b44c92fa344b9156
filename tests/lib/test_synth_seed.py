"""The generator's invariants, checked with SQL over a loaded demo dataset."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from ledger_assets.lib.sor.pgcluster import PrivateCluster
from ledger_assets.lib.synth.load import SEED_TABLES, SeedReport, SeedSpec, seed_database

# The template database tests/conftest.py migrates once per session.
TEMPLATE_DB = "ledger_template"


@pytest.fixture(scope="module")
def seeded(pg_cluster: PrivateCluster) -> Iterator[tuple[str, SeedReport]]:
    """One demo seed shared by the read-only checks of this module."""
    name = f"t_seed_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_cluster.dsn("postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("create database {} template {}").format(
                sql.Identifier(name), sql.Identifier(TEMPLATE_DB)
            )
        )
    dsn = pg_cluster.dsn(name)
    report = seed_database(dsn, SeedSpec.demo())
    yield dsn, report
    with psycopg.connect(pg_cluster.dsn("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))


def scalar(dsn: str, query: str) -> object:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row[0]


def zero(dsn: str, query: str) -> None:
    """``query`` counts violations; there must be none."""
    assert scalar(dsn, query) == 0, query


def test_report_matches_the_tables(seeded: tuple[str, SeedReport]) -> None:
    dsn, report = seeded
    for table in SEED_TABLES:
        assert scalar(dsn, f"select count(*) from ledger.{table}") == report.row_counts[table]
    assert 90_000 <= report.total_rows <= 110_000
    assert report.rows_per_second > 0
    # One connection per table, two for the balance transactions.
    assert report.connections == len(SEED_TABLES) + 1


def test_balance_transaction_identities(seeded: tuple[str, SeedReport]) -> None:
    dsn, _ = seeded
    zero(dsn, "select count(*) from ledger.stripe_balance_transactions where net <> amount - fee")
    zero(
        dsn,
        "select count(*) from ledger.stripe_balance_transactions b where fee <> coalesce(("
        "select sum((d->>'amount')::bigint) from jsonb_array_elements(b.fee_details) d), 0)",
    )
    # Fees are realistic: ~2.9% + a fixed part, and not all zero.
    assert scalar(
        dsn,
        "select count(*) from ledger.stripe_balance_transactions where type = 'charge' "
        "and fee between amount * 0.02 and amount * 0.05 + 200",
    ) > 0.9 * scalar(
        dsn, "select count(*) from ledger.stripe_balance_transactions where type = 'charge'"
    )  # type: ignore[operator]


def test_payouts_equal_the_sum_of_their_transactions(seeded: tuple[str, SeedReport]) -> None:
    dsn, _ = seeded
    assert scalar(dsn, "select count(*) from ledger.stripe_payouts") > 0  # type: ignore[operator]
    zero(
        dsn,
        "select count(*) from ledger.stripe_payouts p where p.amount <> ("
        "select coalesce(sum(net), 0) from ledger.stripe_balance_transactions b where b.payout = "
        "p.id)",
    )
    zero(
        dsn,
        "select count(*) from ledger.stripe_payouts p left join "
        "ledger.stripe_balance_transactions b "
        "on b.id = p.balance_transaction where b.id is null or b.type <> 'payout' "
        "or b.amount <> -p.amount or b.source <> p.id or b.tenant_id <> p.tenant_id",
    )
    zero(dsn, "select count(*) from ledger.stripe_payouts where amount <= 0")


def test_charges_refunds_and_their_transactions(seeded: tuple[str, SeedReport]) -> None:
    dsn, _ = seeded
    zero(
        dsn,
        "select count(*) from ledger.stripe_charges c where c.amount_refunded <> coalesce(("
        "select sum(amount) from ledger.stripe_refunds r where r.charge = c.id), 0) "
        "or c.refunded <> (c.amount_refunded = c.amount and c.status = 'succeeded') "
        "or c.amount_refunded > c.amount",
    )
    zero(
        dsn,
        "select count(*) from ledger.stripe_charges c left join "
        "ledger.stripe_balance_transactions b "
        "on b.id = c.balance_transaction where (c.status = 'succeeded') <> (b.id is not null) "
        "or b.amount <> c.amount or b.source <> c.id or b.type <> 'charge'",
    )
    zero(
        dsn,
        "select count(*) from ledger.stripe_refunds r join ledger.stripe_balance_transactions b "
        "on b.id = r.balance_transaction where b.amount <> -r.amount or b.source <> r.id",
    )
    failed = scalar(dsn, "select count(*) from ledger.stripe_charges where status = 'failed'")
    assert 0 < failed < scalar(dsn, "select count(*) / 10 from ledger.stripe_charges")  # type: ignore[operator]
    partial = (
        "select count(*) from ledger.stripe_charges where amount_refunded between 1 and amount - 1"
    )
    assert scalar(dsn, partial) > 0  # type: ignore[operator]
    assert scalar(dsn, "select count(*) from ledger.stripe_charges where refunded") > 0  # type: ignore[operator]


def test_disputes(seeded: tuple[str, SeedReport]) -> None:
    dsn, _ = seeded
    zero(
        dsn,
        "select count(*) from ledger.stripe_disputes d join ledger.stripe_charges c on c.id = "
        "d.charge "
        "where not c.disputed or d.created <= c.created or d.tenant_id <> c.tenant_id",
    )
    zero(
        dsn,
        "select count(*) from ledger.stripe_charges c where c.disputed and not exists "
        "(select from ledger.stripe_disputes d where d.charge = c.id)",
    )
    # Withdrawal: -amount with a dispute fee; won disputes are reinstated with +amount.
    zero(
        dsn,
        "select count(*) from ledger.stripe_disputes d "
        "left join ledger.stripe_balance_transactions w on w.id = d.balance_transactions[1] "
        "left join ledger.stripe_balance_transactions r on r.id = d.balance_transactions[2] "
        "where (d.status like 'warning%') <> (cardinality(d.balance_transactions) = 0) "
        "or (d.status = 'won') <> (cardinality(d.balance_transactions) = 2) "
        "or (cardinality(d.balance_transactions) > 0 and (w.id is null or w.amount <> -d.amount "
        "    or w.fee <= 0 or w.reporting_category <> 'dispute' or w.source <> d.id)) "
        "or (d.status = 'won' and (r.id is null or r.amount <> d.amount "
        "    or r.reporting_category <> 'dispute_reversal' or r.created <= w.created))",
    )
    late = scalar(
        dsn,
        "select count(*) from ledger.stripe_disputes d join ledger.stripe_charges c on c.id = "
        "d.charge "
        "where d.created > c.created + interval '90 days'",
    )
    assert late > 0  # type: ignore[operator]
    statuses = scalar(dsn, "select array_agg(distinct status) from ledger.stripe_disputes")
    assert {"won", "lost"} <= set(statuses)  # type: ignore[arg-type]


def test_time_zone_spread(seeded: tuple[str, SeedReport]) -> None:
    dsn, _ = seeded
    with psycopg.connect(dsn) as conn:
        offsets = conn.execute(
            "select time_zone, "
            "extract(epoch from (timestamptz '2025-01-15 12:00Z' at time zone time_zone) "
            "  - timestamp '2025-01-15 12:00') / 3600, "
            "extract(epoch from (timestamptz '2025-07-15 12:00Z' at time zone time_zone) "
            "  - timestamp '2025-07-15 12:00') / 3600 "
            "from (select distinct time_zone from ledger.tenants) z"
        ).fetchall()
    assert len(offsets) >= 8
    assert any(july > jan for _, jan, july in offsets), "no northern-hemisphere DST zone"
    assert any(jan > july for _, jan, july in offsets), "no southern-hemisphere DST zone"
    assert max(max(jan, july) for _, jan, july in offsets) >= 13, "no zone at UTC+13 or beyond"
    assert any(jan % 1 != 0 for _, jan, _ in offsets), "no non-hour offset"


def test_currencies_and_three_decimal_amounts(seeded: tuple[str, SeedReport]) -> None:
    dsn, _ = seeded
    exponents = scalar(
        dsn,
        "select array_agg(distinct c.exponent order by c.exponent) from ledger.tenants t "
        "join ledger.currencies c on c.code = t.default_currency",
    )
    assert exponents == [0, 2, 3]
    three = "(select code from ledger.currencies where exponent = 3)"
    assert scalar(dsn, f"select count(*) from ledger.stripe_charges where currency in {three}") > 0  # type: ignore[operator]
    for table, columns in {
        "stripe_charges": ("amount", "amount_refunded"),
        "stripe_refunds": ("amount",),
        "stripe_disputes": ("amount",),
        "stripe_payouts": ("amount",),
        "stripe_balance_transactions": ("amount", "fee", "net"),
    }.items():
        bad = " or ".join(f"{c} % 10 <> 0" for c in columns)
        zero(dsn, f"select count(*) from ledger.{table} where currency in {three} and ({bad})")


def test_plaid_transactions(seeded: tuple[str, SeedReport]) -> None:
    dsn, _ = seeded
    assert scalar(dsn, "select count(*) from ledger.plaid_transactions where pending") > 0  # type: ignore[operator]
    assert scalar(dsn, "select count(*) from ledger.plaid_transactions where not pending") > 0  # type: ignore[operator]
    linked = scalar(
        dsn,
        "select count(*) from ledger.plaid_transactions where pending_transaction_id is not null",
    )
    assert linked > 0  # type: ignore[operator]
    # A posted row names a pending row that Plaid removed when it posted.
    zero(
        dsn,
        "select count(*) from ledger.plaid_transactions t where pending_transaction_id is not null "
        "and (pending or exists (select from ledger.plaid_transactions p "
        "where p.transaction_id = t.pending_transaction_id))",
    )
    zero(
        dsn,
        "select count(*) from ledger.plaid_transactions t join ledger.currencies c on c.code = "
        "t.currency "
        "where t.amount <> t.amount_minor / power(10::numeric, c.exponent)",
    )
    # Plaid's sign: both money out (positive) and money in (negative).
    assert scalar(dsn, "select count(*) filter (where amount > 0) > 0 and count(*) filter "
                  "(where amount < 0) > 0 from ledger.plaid_transactions") is True  # fmt: skip


def test_referential_integrity(seeded: tuple[str, SeedReport]) -> None:
    dsn, _ = seeded
    # (child, column, parent, key): every reference resolves, within the same tenant.
    references = [
        ("stripe_charges", "tenant_id", "tenants", "tenant_id"),
        ("stripe_refunds", "charge", "stripe_charges", "id"),
        ("stripe_disputes", "charge", "stripe_charges", "id"),
        ("stripe_charges", "balance_transaction", "stripe_balance_transactions", "id"),
        ("stripe_refunds", "balance_transaction", "stripe_balance_transactions", "id"),
        ("stripe_payouts", "balance_transaction", "stripe_balance_transactions", "id"),
        ("stripe_balance_transactions", "payout", "stripe_payouts", "id"),
        ("plaid_accounts", "item_id", "plaid_items", "item_id"),
        ("plaid_transactions", "item_id", "plaid_items", "item_id"),
        ("plaid_transactions", "account_id", "plaid_accounts", "account_id"),
    ]
    for child, column, parent, key in references:
        zero(
            dsn,
            f"select count(*) from ledger.{child} c where c.{column} is not null and not exists "
            f"(select from ledger.{parent} p where p.{key} = c.{column} and p.tenant_id = "
            f"c.tenant_id)",
        )
    zero(
        dsn,
        "select count(*) from ledger.plaid_transactions t join ledger.plaid_accounts a "
        "using (account_id) where a.item_id <> t.item_id or a.currency <> t.currency",
    )
    sources = {"ch_": "stripe_charges", "re_": "stripe_refunds", "dp_": "stripe_disputes",
               "po_": "stripe_payouts"}  # fmt: skip
    for prefix, parent in sources.items():
        zero(
            dsn,
            f"select count(*) from ledger.stripe_balance_transactions b where b.source like "
            f"'{prefix}%' "
            f"and not exists (select from ledger.{parent} p where p.id = b.source)",
        )
    zero(
        dsn,
        "select count(*) from ledger.stripe_disputes d, unnest(d.balance_transactions) bt "
        "where not exists (select from ledger.stripe_balance_transactions b where b.id = bt)",
    )


def test_indexes_and_keys_are_rebuilt(seeded: tuple[str, SeedReport], migrated_dsn: str) -> None:
    """The seed drops indexes and unreferenced keys to rebuild them: the schema ends as migrated."""
    queries = [
        "select indexrelid::regclass::text, pg_get_indexdef(indexrelid) from pg_index "
        "where indrelid::regclass::text like 'ledger.%' order by 1",
        "select conrelid::regclass::text, conname, pg_get_constraintdef(oid), conindid <> 0 "
        "from pg_constraint where connamespace = 'ledger'::regnamespace order by 1, 2",
        "select attrelid::regclass::text, attname, attnotnull from pg_attribute "
        "where attrelid::regclass::text like 'ledger.%' and attnum > 0 order by 1, 2",
    ]
    with psycopg.connect(seeded[0]) as a, psycopg.connect(migrated_dsn) as b:
        for query in queries:
            assert a.execute(query).fetchall() == b.execute(query).fetchall(), query
