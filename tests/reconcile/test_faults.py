"""Each fault is caught in one cycle, with the exact table, tenant, day and key."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ledger_assets.lib.lake.layout import PartitionKey
from ledger_assets.lib.reconcile import ReconciliationReport
from tests.reconcile.conftest import INCREMENTAL, Env, busy_base_file, rewrite

CHARGES = "stripe_charges"


def first_row(env: Env, table: str) -> tuple[Path, dict[str, Any]]:
    path = busy_base_file(env.layout, table)
    return path, pq.read_table(path).slice(0, 1).to_pylist()[0]


def failing(report: ReconciliationReport) -> set[tuple[str, int, date]]:
    assert report.status == "fail", report.reason
    return set(report.mismatched_partitions())


def test_clean_lake_passes(env: Env) -> None:
    report = env.check()
    assert report.status == "pass", report.to_metadata()
    assert report.partitions_checked > 100
    assert report.rows_compared > 1_000
    assert report.mismatches == ()
    assert report.identity_violations == ()
    results = report.results_table()
    assert results.num_rows > 0
    assert set(results.column("status").to_pylist()) == {"match"}
    # One results row per (table, tenant, day, currency), the categories' groups summed.
    groups = {(c.table, c.tenant_id, c.local_date, c.currency) for c in report.comparisons}
    assert results.num_rows == len(groups) < report.groups.num_rows
    assert pc.sum(results.column("pg_rows")).as_py() == report.rows_compared
    assert results.column("pg_amount") == results.column("lake_amount")


def test_one_cent_changed_in_a_parquet_file(env: Env) -> None:
    path, row = first_row(env, CHARGES)
    rewrite(path, lambda t: t.set_column(
        t.schema.get_field_index("amount"), "amount",
        pc.if_else(pc.equal(t.column("id"), row["id"]), pc.add(t.column("amount"), 1),
                   t.column("amount")),
    ))  # fmt: skip
    report = env.check()
    assert failing(report) == {(CHARGES, row["tenant_id"], row["local_date"])}
    (m,) = report.mismatches
    assert m.lake.amount - m.postgres.amount == 1
    assert m.lake.rows == m.postgres.rows
    assert m.different_keys == (row["id"],)
    assert not m.missing_keys
    assert not m.extra_keys
    assert m.samples[0]["columns"] == ["amount"]
    table = report.results_table()
    bad = table.filter(pc.equal(table.column("status"), "mismatch")).to_pylist()
    assert [(r["table_name"], r["differing_keys"]) for r in bad] == [(CHARGES, row["id"])]


def test_a_row_dropped_from_the_lake(env: Env) -> None:
    path, row = first_row(env, CHARGES)
    rewrite(path, lambda t: t.filter(pc.not_equal(t.column("id"), row["id"])))
    report = env.check()
    assert failing(report) == {(CHARGES, row["tenant_id"], row["local_date"])}
    assert {m.missing_keys for m in report.mismatches} == {(row["id"],)}


def test_a_row_duplicated_in_the_lake(env: Env) -> None:
    path, row = first_row(env, CHARGES)
    rewrite(path, lambda t: pa.concat_tables([t, t.slice(0, 1)]))
    report = env.check()
    assert failing(report) == {(CHARGES, row["tenant_id"], row["local_date"])}
    (m,) = report.mismatches
    assert m.extra_keys == (row["id"],)
    assert m.lake.rows == m.postgres.rows + 1


def test_a_row_moved_to_another_tenant(env: Env) -> None:
    path, row = first_row(env, CHARGES)
    tenants = sorted(set(pq.read_table(path).column("tenant_id").to_pylist()))
    other = next(t for t in tenants if t != row["tenant_id"])
    rewrite(path, lambda t: t.set_column(
        t.schema.get_field_index("tenant_id"), "tenant_id",
        pc.if_else(pc.equal(t.column("id"), row["id"]), pa.scalar(other, pa.int32()),
                   t.column("tenant_id")),
    ))  # fmt: skip
    report = env.check()
    day = row["local_date"]
    assert failing(report) == {(CHARGES, row["tenant_id"], day), (CHARGES, other, day)}
    by_tenant = {m.tenant_id: m for m in report.mismatches}
    assert by_tenant[row["tenant_id"]].missing_keys == (row["id"],)
    assert by_tenant[other].extra_keys == (row["id"],)


def test_a_row_changed_in_postgres_behind_the_pipeline(env: Env) -> None:
    (charge, tenant), *_ = env.sql(
        "select id, tenant_id from ledger.stripe_charges where status = 'succeeded' order by id"
        " limit 1"
    )
    publication = env.config.publication
    # Logical decoding skips changes to a table while it is outside the publication.
    env.sql(f"alter publication {publication} drop table ledger.stripe_charges")
    env.sql("update ledger.stripe_charges set amount = amount + 1 where id = %s", (charge,))
    env.sql(f"alter publication {publication} add table ledger.stripe_charges")
    env.sync()
    report = env.check()
    (m,) = report.mismatches
    assert (m.table, m.tenant_id) == (CHARGES, tenant)
    assert m.different_keys == (charge,)
    assert m.postgres.amount - m.lake.amount == 1


def test_session_replication_role_replica_does_not_hide_a_change(env: Env) -> None:
    """Triggers are skipped under ``replica``, but logical decoding still sees the change."""
    (charge,), *_ = env.sql("select id from ledger.stripe_charges order by id limit 1")
    with psycopg.connect(env.dsn, autocommit=True) as conn:
        conn.execute("set session_replication_role = replica")
        conn.execute(
            "update ledger.stripe_charges set amount = amount + 1 where id = %s", (charge,)
        )
    env.sync()
    report = env.check()
    assert report.status == "pass", report.to_metadata()


def test_a_base_day_file_deleted(env: Env) -> None:
    path = busy_base_file(env.layout, CHARGES)
    rows = pq.read_table(path)
    day = rows.column("local_date")[0].as_py()
    path.unlink()
    report = env.check()
    expected = {(CHARGES, t, day) for t in set(rows.column("tenant_id").to_pylist())}
    assert failing(report) == expected
    missing = {k for m in report.mismatches for k in m.missing_keys}
    assert missing == set(rows.column("id").to_pylist())


def test_an_overlay_file_deleted(env: Env) -> None:
    (charge, tenant), *_ = env.sql(
        "select id, tenant_id from ledger.stripe_charges order by id desc limit 1"
    )
    env.sql("update ledger.stripe_charges set amount = amount + 7 where id = %s", (charge,))
    env.sync()
    overlays = env.layout.overlay_keys(CHARGES)
    key = next(k for k in overlays if k.tenant_id == tenant)
    assert env.check().status == "pass"
    env.layout.overlay_file(PartitionKey(CHARGES, key.tenant_id, key.local_date)).unlink()
    report = env.check()
    assert failing(report) == {(CHARGES, tenant, key.local_date)}
    (m,) = report.mismatches
    assert m.different_keys == (charge,)
    assert m.postgres.amount - m.lake.amount == 7


def test_lake_file_damage_is_compared_by_the_next_incremental_cycle(env: Env) -> None:
    # A sweep too slow to reach the damaged day by chance: only the file drift can find it.
    first = env.check(INCREMENTAL, sweep_cycles=100_000)
    assert first.status == "pass", first.reason
    # The lake's last day: the sweep, one day per cycle from the first, is far from it.
    path = env.layout.base_files(CHARGES)[-1]
    row = pq.read_table(path).slice(0, 1).to_pylist()[0]
    rewrite(path, lambda t: t.set_column(
        t.schema.get_field_index("amount"), "amount",
        pc.if_else(pc.equal(t.column("id"), row["id"]), pc.add(t.column("amount"), 1),
                   t.column("amount")),
    ))  # fmt: skip
    report = env.check(INCREMENTAL, sweep_cycles=100_000)
    assert failing(report) == {(CHARGES, row["tenant_id"], row["local_date"])}
    (m,) = report.mismatches
    assert m.different_keys == (row["id"],)
    # Nothing else changed: the cycle after compares the same day again (still failing) and
    # finds nothing new.
    again = env.check(INCREMENTAL, sweep_cycles=100_000)
    assert failing(again) == {(CHARGES, row["tenant_id"], row["local_date"])}
