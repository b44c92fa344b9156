"""seed_database: determinism, refusal to load into a non-empty database, all-or-nothing."""

from __future__ import annotations

import hashlib
from datetime import date

import numpy as np
import psycopg
import pytest

from ledger_assets.lib.synth import load
from ledger_assets.lib.synth.generate import TABLES, Generator
from ledger_assets.lib.synth.ids import ID_DIGITS
from ledger_assets.lib.synth.load import (
    SEED_TABLES,
    SeedError,
    SeedSpec,
    SeedTargetNotEmptyError,
    seed_database,
)
from ledger_assets.lib.synth.pgcopy import Encoder

SMALL = SeedSpec(seed=7, tenants=13, start=date(2024, 1, 1), days=40, target_rows=6_000)


def table_digest(dsn: str, table: str) -> str:
    """A hash of a table's content (minus ingested_at, the load time) in key order."""
    with psycopg.connect(dsn) as conn:
        cols = [
            c
            for (c,) in conn.execute(
                "select column_name from information_schema.columns "
                "where table_schema = 'ledger' and table_name = %s "
                "and column_name <> 'ingested_at' order by ordinal_position",
                (table,),
            )
        ]
        rows = conn.execute(
            f"select {', '.join(cols)} from ledger.{table} order by 1"  # type: ignore[arg-type]
        ).fetchall()
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {
            t: conn.execute(f"select count(*) from ledger.{t}").fetchone()[0]  # type: ignore[index,arg-type]
            for t in SEED_TABLES
        }


def encoded(spec: SeedSpec) -> str:
    digest = hashlib.sha256()
    encoders = {t: Encoder(c) for t, c in TABLES.items()}
    for batch in Generator(spec).batches():
        digest.update(batch.table.encode())
        digest.update(bytes(memoryview(encoders[batch.table].encode(batch.values, batch.rows))))
    return digest.hexdigest()


def _numbers(ids: np.ndarray) -> np.ndarray:
    """Base-36 id matrix (prefix stripped) back to integers."""
    digits = ids[:, -ID_DIGITS:].astype(np.int64)
    values = np.where(digits >= ord("a"), digits - ord("a") + 10, digits - ord("0"))
    return values @ (36 ** np.arange(ID_DIGITS - 1, -1, -1, dtype=np.int64))


@pytest.mark.parametrize(
    ("table", "key", "time"),
    [
        ("stripe_charges", "id", "created"),
        ("stripe_refunds", "id", "created"),
        ("stripe_disputes", "id", "created"),
        ("stripe_payouts", "id", "created"),
        ("stripe_balance_transactions", "id", "created"),
        ("plaid_transactions", "transaction_id", "date"),
    ],
)
def test_load_order_ascends_by_id_and_by_tenant_time(table: str, key: str, time: str) -> None:
    """Rows stream in (tenant, time) order with ascending ids: append-mostly btrees."""
    keys, tenants, times = [], [], []
    for batch in Generator(SMALL).batches():
        if batch.table == table and batch.rows:
            keys.append(_numbers(batch.values[key]))  # type: ignore[arg-type]
            tenants.append(np.asarray(batch.values["tenant_id"]))
            times.append(np.asarray(batch.values[time]))
    k, t, ts = np.concatenate(keys), np.concatenate(tenants), np.concatenate(times)
    assert len(k) > 0
    assert (np.diff(k) > 0).all()
    assert (np.diff(t) >= 0).all()
    assert ((np.diff(t) > 0) | (np.diff(ts) >= 0)).all()


def test_generator_is_deterministic() -> None:
    assert encoded(SMALL) == encoded(SMALL)
    assert encoded(SMALL) != encoded(SMALL.with_seed(8))


def test_same_seed_same_rows_in_the_database(migrated_dsn: str) -> None:
    seed_database(migrated_dsn, SMALL)
    first = {t: table_digest(migrated_dsn, t) for t in SEED_TABLES}
    # Truncate and load again: the content must be identical, table by table.
    with psycopg.connect(migrated_dsn) as conn:
        conn.execute(f"truncate {', '.join('ledger.' + t for t in SEED_TABLES)} cascade")  # type: ignore[arg-type]
    seed_database(migrated_dsn, SMALL, parallel=False)  # the single-connection path too
    assert {t: table_digest(migrated_dsn, t) for t in SEED_TABLES} == first


def test_refuses_a_database_with_data(migrated_dsn: str) -> None:
    seed_database(migrated_dsn, SMALL, analyze=False)
    before = counts(migrated_dsn)
    with pytest.raises(SeedTargetNotEmptyError, match=r"ledger\.tenants .*already hold rows"):
        seed_database(migrated_dsn, SMALL)
    assert counts(migrated_dsn) == before


def test_a_failure_midway_leaves_nothing(
    migrated_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Generator.tenant_batches
    seen: list[int] = []

    def failing(self: Generator, tenant: load.Generator) -> list[load.Batch]:  # type: ignore[name-defined]
        seen.append(1)
        if len(seen) == 6:
            raise RuntimeError("generator broke")
        return original(self, tenant)  # type: ignore[arg-type]

    monkeypatch.setattr(Generator, "tenant_batches", failing)
    with pytest.raises(RuntimeError, match="generator broke"):
        seed_database(migrated_dsn, SMALL)
    assert set(counts(migrated_dsn).values()) == {0}


def test_a_server_error_rolls_everything_back(
    migrated_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Generator.tenant_batches

    def corrupt(self: Generator, tenant: object) -> list[load.Batch]:
        batches = original(self, tenant)  # type: ignore[arg-type]
        if tenant.tenant_id == 5:  # type: ignore[attr-defined]
            for batch in batches:
                if batch.table == "stripe_charges" and batch.rows:
                    batch.values["amount"] = -batch.values["amount"]  # violates amount >= 0
        return batches

    monkeypatch.setattr(Generator, "tenant_batches", corrupt)
    with pytest.raises(SeedError, match="rolled back"):
        seed_database(migrated_dsn, SMALL)
    assert set(counts(migrated_dsn).values()) == {0}
    # The dropped secondary indexes and primary keys came back with the rollback.
    with psycopg.connect(migrated_dsn) as conn:
        names = {
            n
            for (n,) in conn.execute("select indexname from pg_indexes where schemaname = 'ledger'")
        }
    assert {
        "stripe_bt_payout",
        "stripe_charges_tenant_created",
        "stripe_balance_transactions_pkey",
    } <= names


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="tenants"):
        SeedSpec(tenants=0)
    with pytest.raises(ValueError, match="refund_rate"):
        SeedSpec(refund_rate=1.5)
    spec = SeedSpec.scale(200_000_000, tenants=1000, years=3)
    assert spec.days == 1096
    assert spec.tenants == 1000
