"""Capture against a real Postgres: typed values, TOAST, partition moves, TRUNCATE, bounds."""

from __future__ import annotations

import itertools
import json
import os
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest
from psycopg.types.json import Jsonb

from ledger_assets.lib.cdc import (
    CaptureBusyError,
    CaptureConfig,
    ChangeCapture,
    PublicationMismatchError,
    UnsupportedSchemaChangeError,
    capture_health,
    reset_capture,
)
from ledger_assets.lib.cdc import slot as slots
from ledger_assets.lib.cdc.changelog import PruneReport, prunable_end, prune_batches
from ledger_assets.lib.cdc.lsn import Lsn
from ledger_assets.lib.cdc.pgoutput import UNCHANGED_TOAST, Update, decode
from tests.lib.cdc.helpers import (
    assert_lake_equals_postgres,
    capture_all,
    change_rows,
    execute,
    landed,
    started,
)

CHARGE = (
    "insert into ledger.stripe_charges (id, tenant_id, amount, amount_captured, amount_refunded,"
    " currency, status, paid, captured, refunded, disputed, created, description, metadata)"
    " values (%s, %s, %s, %s, 0, 'usd', 'succeeded', true, true, false, false, %s, %s, %s)"
)
INT8_MAX = 9_223_372_036_854_775_807


def charge(conn: psycopg.Connection[tuple[object, ...]], key: str, **values: object) -> None:
    row = {
        "tenant": 1,
        "amount": 1000,
        "created": "2024-01-15 12:00:00+00",
        "description": None,
        "metadata": "{}",
    } | values
    conn.execute(
        CHARGE,
        (
            key,
            row["tenant"],
            row["amount"],
            row["amount"],
            row["created"],
            row["description"],
            row["metadata"],
        ),
    )


def test_changes_across_tables_match_postgres_exactly(config: CaptureConfig) -> None:
    started(config)
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        # Around the US DST change (2024-03-10 02:00 EST -> 03:00 EDT), to the microsecond.
        charge(conn, "ch_before", created="2024-03-10 01:59:59.999999-05", amount=INT8_MAX)
        charge(conn, "ch_after", created="2024-03-10 03:00:00.000001-04", amount=0)
        charge(conn, "ch_null", description=None, metadata='{"k": "ünïcødé ✓", "n": [1, 2.5]}')
        charge(conn, "ch_gone", description="to delete")
        conn.execute("update ledger.stripe_charges set description = 'x' where id = 'ch_after'")
        conn.execute("delete from ledger.stripe_charges where id = 'ch_gone'")
        conn.execute(
            "insert into ledger.stripe_balance_transactions (id, tenant_id, amount, fee, net,"
            " currency, exchange_rate, fee_details, type, reporting_category, status,"
            " available_on, created) values"
            " ('txn_max', 1, -5, 3, -8, 'usd', 9999999999.9999999999, '[{\"amount\": 3}]',"
            "  'charge', 'charge', 'available', now(), now()),"
            " ('txn_min', 1, 0, 0, 0, 'usd', -0.0000000001, '[]', 'charge', 'charge',"
            "  'pending', now(), now()),"
            " ('txn_null', 2, 1, 0, 1, 'gbp', null, '[]', 'charge', 'charge', 'pending',"
            "  now(), now())"
        )
        conn.execute(
            "insert into ledger.stripe_disputes (id, tenant_id, charge, amount, currency, reason,"
            " status, created, balance_transactions) values ('dp_1', 1, 'ch_null', 10, 'usd',"
            " 'fraudulent', 'needs_response', now(),"
            " array['txn_1', 'with space', 'quote\"and\\\\backslash', '', 'NULL', null])"
        )
        conn.execute(
            "insert into ledger.plaid_items values ('item_1', 1, 'ins_1', 'Bank', now());"
            "insert into ledger.plaid_accounts (account_id, tenant_id, item_id, name, type,"
            " currency) values ('acc_1', 1, 'item_1', 'Checking', 'depository', 'usd');"
            "insert into ledger.plaid_transactions (transaction_id, tenant_id, item_id,"
            " account_id, amount, amount_minor, currency, date, payment_channel, pending)"
            " values ('pt_1', 1, 'item_1', 'acc_1', -1234567890123456.7891, -123456789012345679,"
            " 'usd', '2024-11-03', 'online', false)"
        )

    manifests = capture_all(config)

    assert_lake_equals_postgres(config)
    charges = {r["key"]: r for r in change_rows(config, "stripe_charges") if r["op"] == "insert"}
    assert charges["ch_before"]["new"]["created"] == datetime(
        2024, 3, 10, 6, 59, 59, 999999, tzinfo=UTC
    )
    assert charges["ch_after"]["new"]["created"] == datetime(2024, 3, 10, 7, 0, 0, 1, tzinfo=UTC)
    assert charges["ch_before"]["new"]["amount"] == INT8_MAX
    assert charges["ch_null"]["new"]["description"] is None
    bt = {r["key"]: r["new"] for r in change_rows(config, "stripe_balance_transactions")}
    assert bt["txn_max"]["exchange_rate"] == Decimal("9999999999.9999999999")
    assert bt["txn_min"]["exchange_rate"] == Decimal("-0.0000000001")
    assert bt["txn_null"]["exchange_rate"] is None
    (dispute,) = change_rows(config, "stripe_disputes")
    assert dispute["new"]["balance_transactions"] == [
        "txn_1",
        "with space",
        'quote"and\\\\backslash',  # standard_conforming_strings: both backslashes stay
        "",
        "NULL",
        None,
    ]
    (plaid,) = change_rows(config, "plaid_transactions")
    assert plaid["new"]["amount"] == Decimal("-1234567890123456.7891")
    assert plaid["new"]["date"] == date(2024, 11, 3)
    ops = [r["op"] for r in change_rows(config, "stripe_charges")]
    assert ops == ["insert"] * 4 + ["update", "delete"]
    # Batches are contiguous and every change is counted once.
    assert sum(m.changes for m in manifests) == 6 + 3 + 1 + 1
    for previous, current in itertools.pairwise(manifests):
        assert current.start == previous.end


def test_unchanged_toasted_value_is_recovered_from_the_old_row(config: CaptureConfig) -> None:
    started(config)
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        # ~64 kB of random hex: compresses to well over the 2 kB TOAST threshold, so it is
        # stored out of line and an UPDATE of another column sends it as 'u'.
        conn.execute(
            CHARGE,
            (
                "ch_toast",
                1,
                5,
                5,
                "2024-01-01 00:00+00",
                None,
                Jsonb({"blob": "".join(f"{n:08x}" for n in range(8000)), "seed": "x" * 10}),
            ),
        )
        conn.execute("update ledger.stripe_charges set amount = 7 where id = 'ch_toast'")
        # Prove the stream really carries the unchanged-TOAST marker.
        raw = conn.execute(
            "select data from pg_logical_slot_peek_binary_changes(%s, null, null,"
            " 'proto_version', '1', 'publication_names', %s)",
            (config.slot_name, config.publication),
        ).fetchall()
    updates = [m for m in (decode(bytes(r[0])) for r in raw) if isinstance(m, Update)]
    assert any(v is UNCHANGED_TOAST for v in updates[0].new)

    capture_all(config)

    update = change_rows(config, "stripe_charges")[-1]
    assert update["op"] == "update"
    assert update["new"]["amount"] == 7
    assert len(update["new"]["metadata"]) > 60_000
    assert update["new"]["metadata"] == update["old"]["metadata"]
    assert_lake_equals_postgres(config)


def test_update_moving_a_row_to_another_tenant_and_day_keeps_the_old_row(
    config: CaptureConfig,
) -> None:
    started(config)
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        charge(conn, "ch_move", tenant=1, created="2024-06-30 23:30:00+00")
        conn.execute(
            "update ledger.stripe_charges set tenant_id = 2, created = '2024-07-01 00:30:00+00'"
            " where id = 'ch_move'"
        )
    capture_all(config)
    update = change_rows(config, "stripe_charges")[-1]
    assert update["old_kind"] == "full"
    assert (update["old"]["tenant_id"], update["old"]["created"]) == (
        1,
        datetime(2024, 6, 30, 23, 30, tzinfo=UTC),
    )
    assert (update["new"]["tenant_id"], update["new"]["created"]) == (
        2,
        datetime(2024, 7, 1, 0, 30, tzinfo=UTC),
    )


def test_truncate_is_an_explicit_change(config: CaptureConfig) -> None:
    started(config)
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        charge(conn, "ch_1")
        conn.execute(
            "insert into ledger.stripe_refunds (id, tenant_id, charge, amount, currency, status,"
            " created) values ('re_1', 1, 'ch_1', 5, 'usd', 'succeeded', now())"
        )
        conn.execute("truncate ledger.stripe_refunds")
    (manifest,) = capture_all(config)
    assert manifest.truncated_tables == ("stripe_refunds",)
    ops = [(r["op"], r["key"], r["new"]) for r in change_rows(config, "stripe_refunds")]
    assert ops[-1] == ("truncate", None, None)
    assert_lake_equals_postgres(config)


def test_reads_are_bounded_but_never_split_a_transaction(config: CaptureConfig) -> None:
    started(config)
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        for txn in range(6):
            with conn.transaction():
                for n in range(10):
                    charge(conn, f"ch_{txn}_{n}")
        with conn.transaction():
            for n in range(200):
                charge(conn, f"ch_big_{n}")
    bounded = CaptureConfig(**{**config.__dict__, "max_changes": 25})
    manifests = capture_all(bounded)
    # A 10-row transaction is 12 pgoutput rows (begin, commit) and each read re-sends the
    # Relation message, so a read reaches the 25-row bound after two transactions; the
    # 200-row transaction exceeds the bound but is landed whole.
    assert [m.changes for m in manifests] == [20, 20, 20, 200]
    assert all(m.end == n.start for m, n in itertools.pairwise(manifests))
    assert_lake_equals_postgres(config)

    with psycopg.connect(config.dsn, autocommit=True) as conn:
        for n in range(3):
            charge(conn, f"ch_timed_{n}")
    timed = CaptureConfig(**{**config.__dict__, "max_seconds": 0.0})
    assert [m.transactions for m in capture_all(timed)] == [1, 1, 1]


def test_large_transaction_is_streamed_in_row_groups(config: CaptureConfig) -> None:
    started(config)
    execute(
        config.dsn,
        "insert into ledger.stripe_charges (id, tenant_id, amount, amount_captured,"
        " amount_refunded, currency, status, paid, captured, refunded, disputed, created)"
        " select 'ch_' || g, 1, g, g, 0, 'usd', 'succeeded', true, true, false, false, now()"
        " from generate_series(1, 25000) g",
    )
    small = CaptureConfig(**{**config.__dict__, "rows_per_flush": 1000, "fetch_rows": 500})
    (manifest,) = capture_all(small)
    (change_file,) = manifest.files
    parquet = pq.ParquetFile(small.changelog_dir / change_file.path)
    # At most rows_per_flush decoded rows were held at once: one row group per flush.
    assert parquet.num_row_groups == 25
    assert parquet.metadata.num_rows == 25000
    assert_lake_equals_postgres(config)


def test_the_change_log_does_not_depend_on_how_the_stream_is_fetched(
    config: CaptureConfig,
) -> None:
    """A fetch boundary can fall anywhere: inside a transaction, between a Relation message
    and its rows, next to a TRUNCATE. One message per fetch must land what one fetch does."""
    one_by_one = CaptureConfig(
        **{
            **config.__dict__,
            "slot_name": f"{config.slot_name}_b",
            "changelog_dir": config.changelog_dir.with_name("_changelog_b"),
            "fetch_rows": 1,
            "rows_per_flush": 3,
        }
    )
    started(config)
    started(one_by_one)
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        charge(conn, "ch_solo")
        with conn.transaction():
            for n in range(7):
                charge(conn, f"ch_{n}", tenant=1 + n % 2, amount=n)
            conn.execute("update ledger.stripe_charges set amount = 99 where id = 'ch_1'")
            conn.execute(
                "insert into ledger.stripe_refunds (id, tenant_id, charge, amount, currency,"
                " status, created) values ('re_1', 1, 'ch_1', 5, 'usd', 'succeeded', now())"
            )
            conn.execute("delete from ledger.stripe_charges where id = 'ch_2'")
            conn.execute("truncate ledger.stripe_refunds")
            charge(conn, "ch_after_truncate")
        conn.execute("alter table ledger.stripe_charges add column risk_score int4")
        with conn.transaction():
            conn.execute("update ledger.stripe_charges set risk_score = 7 where id = 'ch_3'")
            charge(conn, "ch_last")
    (chunked,) = capture_all(config)
    (single,) = capture_all(one_by_one)
    assert (single.source_digest, single.transactions, single.changes) == (
        chunked.source_digest,
        chunked.transactions,
        chunked.changes,
    )
    assert [(f.table, f.part, f.rows, f.ops) for f in single.files] == [
        (f.table, f.part, f.rows, f.ops) for f in chunked.files
    ]
    for table in ("stripe_charges", "stripe_refunds"):
        rows = change_rows(config, table)
        assert change_rows(one_by_one, table) == rows
        # seq numbers every change of a transaction, across tables, from 0.
        assert len({(r["commit_lsn"], r["seq"]) for r in rows}) == len(rows)
    seqs = sorted(
        (r["commit_lsn"], r["seq"])
        for table in ("stripe_charges", "stripe_refunds")
        for r in change_rows(config, table)
    )
    by_commit: dict[int, list[int]] = {}
    for commit_lsn, seq in seqs:
        by_commit.setdefault(commit_lsn, []).append(seq)
    assert [len(s) for s in by_commit.values()] == [1, 12, 2]
    assert all(s == list(range(len(s))) for s in by_commit.values())
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        slots.drop_slot(conn, one_by_one.slot_name)


def test_added_column_starts_a_new_part_and_type_change_fails_closed(
    config: CaptureConfig,
) -> None:
    started(config)
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        charge(conn, "ch_1")
        conn.execute("alter table ledger.stripe_charges add column risk_score int4")
        conn.execute(
            "update ledger.stripe_charges set risk_score = 42, amount = 2 where id = 'ch_1'"
        )
    (manifest,) = capture_all(config)
    assert [(f.table, f.part) for f in manifest.files] == [
        ("stripe_charges", 0),
        ("stripe_charges", 1),
    ]
    assert manifest.schema_changes == ("stripe_charges: added risk_score",)
    update = change_rows(config, "stripe_charges")[-1]
    assert update["new"]["risk_score"] == 42
    assert "risk_score" not in (update["old"] or {}) or update["old"]["risk_score"] is None

    execute(
        config.dsn,
        "alter table ledger.stripe_charges alter column risk_score type int8",
        "update ledger.stripe_charges set risk_score = 43",
    )
    with pytest.raises(UnsupportedSchemaChangeError, match="risk_score changed type"):
        capture_all(config)


def test_column_added_with_a_default_fails_closed_before_landing(config: CaptureConfig) -> None:
    # Existing rows take the default with no change in the stream: the lake would read NULL.
    started(config)
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        charge(conn, "ch_1")
    capture_all(config)
    execute(
        config.dsn,
        "alter table ledger.stripe_charges add column risk_score int4 not null default 7",
        "update ledger.stripe_charges set amount = 2 where id = 'ch_1'",
    )
    before = landed(config)
    for _ in range(2):  # stays stopped: the next attempt refuses the same batch
        with pytest.raises(UnsupportedSchemaChangeError, match="risk_score was added with a"):
            capture_all(config)
    assert landed(config) == before


def test_replica_identity_other_than_full_fails_closed(config: CaptureConfig) -> None:
    started(config)
    execute(
        config.dsn,
        "alter table ledger.stripe_payouts replica identity default",
        "insert into ledger.stripe_payouts (id, tenant_id, amount, currency, status,"
        " arrival_date, created) values ('po_1', 1, 5, 'usd', 'paid', now(), now())",
    )
    with pytest.raises(UnsupportedSchemaChangeError, match="not FULL"):
        capture_all(config)


def test_quiet_wal_is_confirmed_through_an_empty_batch(config: CaptureConfig) -> None:
    eager = CaptureConfig(**{**config.__dict__, "idle_advance_bytes": 0})
    started(eager)
    execute(eager.dsn, "update ledger.tenants set name = 'renamed'")  # not published
    (manifest,) = capture_all(eager)
    assert (manifest.transactions, manifest.files) == (0, ())
    health = capture_health(eager)
    assert health.slot is not None
    assert health.slot.confirmed_flush_lsn == manifest.end == health.landed_lsn


def test_health_reports_retained_wal_and_lag(config: CaptureConfig) -> None:
    started(config)
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        for n in range(49):
            charge(conn, f"ch_{n}", description="x" * 1000)
        with conn.transaction():
            charge(conn, "ch_49", description="x" * 1000)
            # Before the last transaction's commit record: a slot that confirmed that
            # transaction is past it, whatever WAL the cluster writes after it.
            row = conn.execute("select pg_current_wal_insert_lsn()::text").fetchone()
            assert row is not None
            before_last_commit = Lsn.parse(row[0])
    health = capture_health(config)
    assert health.slot is not None
    assert health.problems == []
    assert health.slot.lag_bytes is not None
    assert health.slot.lag_bytes > 50_000
    assert health.slot.retained_wal_bytes is not None
    assert health.slot.retained_wal_bytes >= health.slot.lag_bytes
    assert health.slot.wal_status == "reserved"
    assert not health.slot.active
    capture_all(config)
    after = capture_health(config)
    assert after.slot is not None
    assert after.slot.lag_bytes is not None
    # Caught up with every change written. The WAL may have moved on since (the cluster's own
    # records: checkpoints, autovacuum): a fixed bound on the lag left was a flaky test.
    assert after.slot.confirmed_flush_lsn is not None
    assert after.slot.confirmed_flush_lsn > before_last_commit
    assert after.slot.lag_bytes < health.slot.lag_bytes
    assert after.seconds_since_landed is not None
    assert after.seconds_since_landed < 60


def test_two_captures_of_one_slot_exclude_each_other(config: CaptureConfig) -> None:
    started(config)
    with ChangeCapture(config), pytest.raises(CaptureBusyError), ChangeCapture(config):
        pass


def test_existing_publication_with_other_tables_fails_closed(config: CaptureConfig) -> None:
    execute(
        config.dsn,
        f'create publication "{config.publication}" for table ledger.stripe_charges',
    )
    with pytest.raises(PublicationMismatchError, match="missing"):
        started(config)


def test_snapshot_seam_has_no_gap_and_no_overlap(config: CaptureConfig) -> None:
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        charge(conn, "ch_before")
    with ChangeCapture(config) as capture, capture.start_with_snapshot() as snap:
        with psycopg.connect(config.dsn, autocommit=True) as writer:
            charge(writer, "ch_during")
        with psycopg.connect(config.dsn) as reader:
            reader.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            reader.execute(
                psycopg.sql.SQL("set transaction snapshot {}").format(
                    psycopg.sql.Literal(snap.snapshot_name)
                )
            )
            seeded = [r[0] for r in reader.execute("select id from ledger.stripe_charges")]
    assert seeded == ["ch_before"]
    capture_all(config)
    assert [r["key"] for r in change_rows(config, "stripe_charges")] == ["ch_during"]
    assert landed(config)[0].start == snap.consistent_lsn


def test_reset_capture_drops_the_slot_and_sets_the_change_log_aside(
    config: CaptureConfig,
) -> None:
    started(config)
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        charge(conn, "ch_1")
    capture_all(config)
    archived = reset_capture(config)
    assert archived is not None
    assert (archived / "_state.json").exists()
    assert not config.changelog_dir.exists()
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        assert slots.read_slot(conn, config.slot_name) is None
    started(config)
    assert landed(config) == []
    assert json.loads((config.changelog_dir / "_state.json").read_text())["relations"] == {}


def test_pruned_history_keeps_capture_going(config: CaptureConfig) -> None:
    started(config)
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        charge(conn, "ch_prune_1")
    first = capture_all(config)
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        charge(conn, "ch_prune_2")
    second = capture_all(config)
    assert first
    assert second
    report = prune_batches(config.changelog_dir, first[-1].end)
    assert report.batches == len(first)
    assert report.files >= 1
    assert report.bytes > 0
    assert [m.name for m in landed(config)] == [m.name for m in second]
    leftovers = [p.name for p in config.changelog_dir.glob("*.parquet")]
    assert all(name.startswith(tuple(m.name for m in second)) for name in leftovers)
    # Capture continues from the slot's position: the pruned batches are not needed again.
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        charge(conn, "ch_prune_3")
    third = capture_all(config)
    assert [r["key"] for r in change_rows(config, "stripe_charges")] == ["ch_prune_2", "ch_prune_3"]
    assert third[0].start == second[-1].end
    assert prune_batches(config.changelog_dir, first[-1].end) == PruneReport(0, 0, 0)


def test_the_prune_bound_keeps_recent_batches_and_every_readers_position(tmp_path: Path) -> None:
    now = 1_000_000.0
    for start, end, age in ((0x10, 0x20, 9 * 86_400), (0x20, 0x30, 8 * 86_400), (0x30, 0x40, 60)):
        manifest = tmp_path / f"{Lsn(start).hex16}-{Lsn(end).hex16}.json"
        manifest.write_text("{}")
        os.utime(manifest, (now - age, now - age))
    week = 7 * 86_400
    assert prunable_end(tmp_path, [Lsn(0x40)], week, now) == Lsn(0x30)
    assert prunable_end(tmp_path, [Lsn(0x40), Lsn(0x20)], week, now) == Lsn(0x20)
    assert prunable_end(tmp_path, [None], week, now) == Lsn(0x30)
    assert prunable_end(tmp_path, [Lsn(0x40)], 10 * 86_400, now) is None
