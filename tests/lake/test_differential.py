"""Differential test: random workloads through capture and apply; the lake equals Postgres.

Each seed writes a random mix of inserts, updates (some moving a row to another tenant or local
day), deletes, NULLs, unicode, large TOASTed text and JSON, numerics at their extremes and
timestamps around DST changes, in transactions of varied size; then the change log is captured
and applied and every lake table is compared with Postgres row for row through DuckDB.
"""

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

from ledger_assets.lib.cdc import CaptureConfig, ChangeCapture
from ledger_assets.lib.cdc import slot as slots
from ledger_assets.lib.lake import sync
from ledger_assets.lib.lake.layout import LakeLayout
from ledger_assets.lib.lake.sync import apply_landed, seed_lake
from tests.lake.test_sync import assert_lake_equals_postgres

ZONES = ["America/New_York", "Australia/Sydney", "Pacific/Kiritimati", "Asia/Kathmandu"]
# Instants around DST changes: New York spring forward, Sydney fall back.
DST_EDGES = [datetime(2024, 3, 10, 6, 59, tzinfo=UTC), datetime(2024, 4, 6, 15, 59, tzinfo=UTC)]
TEXTS = ["plain", "ünïcødé ✓ 日本語", "", None, "x" * 9000]


def instant(rng: random.Random) -> datetime:
    edge = rng.choice(DST_EDGES)
    return edge + timedelta(minutes=rng.randint(-180, 180), seconds=rng.randint(0, 59))


def blob(rng: random.Random) -> str:
    """~6 kB after compression: stored out of line (TOASTed)."""
    return "".join(rng.choices("abcdef", k=20000))


def random_workload(dsn: str, rng: random.Random, statements: int) -> None:
    charges: list[str] = []
    batch = rng.getrandbits(32)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for step in range(statements):
            with conn.transaction():
                for _ in range(rng.choice([1, 1, 5, 50])):
                    roll = rng.random()
                    if roll < 0.5 or not charges:
                        cid = f"ch_{batch:08x}_{step}_{rng.getrandbits(40):010x}"
                        amount = rng.choice([0, 1, 10**15, rng.randint(1, 10**6)])
                        big = rng.random() < 0.1
                        conn.execute(
                            "insert into ledger.stripe_charges (id, tenant_id, amount, "
                            "amount_captured, amount_refunded, currency, status, paid, captured, "
                            "refunded, disputed, description, metadata, created) values "
                            "(%s, %s, %s, %s, 0, 'usd', 'succeeded', true, true, false, false, "
                            "%s, %s, %s)",
                            (
                                cid, rng.randint(1, len(ZONES)), amount, amount,
                                rng.choice(TEXTS),
                                Jsonb({"blob": blob(rng)} if big else {}),
                                instant(rng),
                            ),
                        )  # fmt: skip
                        charges.append(cid)
                        bt = f"txn_{cid}"
                        conn.execute(
                            "insert into ledger.stripe_balance_transactions (id, tenant_id, "
                            "amount, fee, net, currency, exchange_rate, type, reporting_category, "
                            "source, status, available_on, created) values (%s, %s, %s, 0, %s, "
                            "'usd', %s, 'charge', 'charge', %s, 'pending', %s, %s)",
                            (
                                bt, rng.randint(1, len(ZONES)), amount, amount,
                                rng.choice([None, Decimal("0.0000000001"),
                                            Decimal("9999999999.9999999999")]),
                                cid, instant(rng), instant(rng),
                            ),
                        )  # fmt: skip
                    elif roll < 0.8:
                        cid = rng.choice(charges)
                        if rng.random() < 0.5:
                            # Moves the row to another tenant and maybe another local day.
                            conn.execute(
                                "update ledger.stripe_charges set tenant_id = %s, created = %s "
                                "where id = %s",
                                (rng.randint(1, len(ZONES)), instant(rng), cid),
                            )
                        else:
                            # Leaves the TOASTed metadata unchanged: it must not become NULL.
                            conn.execute(
                                "update ledger.stripe_charges set description = %s, "
                                "amount_refunded = amount where id = %s",
                                (rng.choice(TEXTS), cid),
                            )
                        conn.execute(
                            "update ledger.stripe_balance_transactions set status = 'available' "
                            "where id = %s",
                            (f"txn_{cid}",),
                        )
                    else:
                        cid = charges.pop(rng.randrange(len(charges)))
                        conn.execute(
                            "delete from ledger.stripe_balance_transactions where id = %s",
                            (f"txn_{cid}",),
                        )
                        conn.execute("delete from ledger.stripe_charges where id = %s", (cid,))


@pytest.fixture
def setup(migrated_dsn: str, tmp_path: Path) -> Any:
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        for tenant, zone in enumerate(ZONES, start=1):
            conn.execute(
                "insert into ledger.tenants (tenant_id, name, time_zone, default_currency, "
                "stripe_account_id) values (%s, 't', %s, 'usd', %s)",
                (tenant, zone, f"acct_{tenant}"),
            )
    name = str(conninfo_to_dict(migrated_dsn)["dbname"])
    layout = LakeLayout(tmp_path / "lake")
    config = CaptureConfig(
        dsn=migrated_dsn, changelog_dir=layout.root / "_changelog",
        slot_name=f"diff_{name}", publication=f"diff_{name}", max_changes=700,
    )  # fmt: skip
    yield migrated_dsn, layout, config
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        slots.drop_slot(conn, config.slot_name)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_workloads_leave_the_lake_equal_to_postgres(setup: Any, seed: int) -> None:
    dsn, layout, config = setup
    rng = random.Random(seed)
    random_workload(dsn, rng, 40)  # history before the lake exists
    with ChangeCapture(config) as capture:
        state = capture.start()
    seed_lake(dsn, layout, state.origin)
    for _ in range(3):
        random_workload(dsn, rng, 60)
        with ChangeCapture(config) as capture:
            capture.start()
            capture.run(max_seconds=60)
        apply_landed(dsn, layout, config.changelog_dir, max_batches=2)  # partial catch-up
    apply_landed(dsn, layout, config.changelog_dir, max_batches=1000)
    assert_lake_equals_postgres(dsn, layout)


def test_a_crash_between_partition_writes_is_repaired_by_the_next_apply(
    setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn, layout, config = setup
    with ChangeCapture(config) as capture:
        state = capture.start()
    seed_lake(dsn, layout, state.origin)
    random_workload(dsn, random.Random(7), 80)
    with ChangeCapture(config) as capture:
        capture.start()
        capture.run(max_seconds=60)
    real = sync.apply_changes
    calls = {"n": 0}

    def dies_on_the_second_table(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed mid-apply")
        return real(*args, **kwargs)

    monkeypatch.setattr(sync, "apply_changes", dies_on_the_second_table)
    with pytest.raises(KeyboardInterrupt):
        apply_landed(dsn, layout, config.changelog_dir, max_batches=1000)
    monkeypatch.setattr(sync, "apply_changes", real)
    assert apply_landed(dsn, layout, config.changelog_dir, max_batches=1000).batches > 0
    assert_lake_equals_postgres(dsn, layout)
