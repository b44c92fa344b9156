"""Benchmark: decode + land throughput of the CDC capture for ~1M row changes.

Run: ``uv run python -m tests.lib.cdc.bench_capture [--changes 1000000] [--profile]``

Starts a throwaway cluster (or uses ``--dsn``), creates the capture slot and a baseline slot,
then runs the issue's B3 mix: 70 % inserts, 25 % updates, 5 % deletes of stripe_charges in
1,000-row transactions, plus one 100k-row single-transaction COPY-style insert. It reports:

* ``server peek``: the same range decoded by Postgres alone (count and bytes, no transfer);
* ``capture``: :meth:`ChangeCapture.run`, i.e. peek + transfer + pgoutput decode + typed Arrow
  + Parquet + fsync + advance, end to end.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import tempfile
import time
from pathlib import Path

import psycopg

from ledger_assets.lib.cdc import CaptureConfig, ChangeCapture
from ledger_assets.lib.cdc import slot as slots
from ledger_assets.lib.sor.migrate import migrate
from ledger_assets.lib.sor.pgcluster import find_free_port, throwaway_cluster

TXN_ROWS = 1_000


def workload(dsn: str, changes: int) -> int:
    """Write the mixed workload; return the number of row changes."""
    inserts = int(changes * 0.70)
    updates = int(changes * 0.25)
    deletes = changes - inserts - updates
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "insert into ledger.tenants (tenant_id, name, time_zone, default_currency,"
            " stripe_account_id) select g, 'tenant ' || g, 'America/New_York', 'usd',"
            " 'acct_' || g from generate_series(1, 50) g on conflict do nothing"
        )
        insert = (
            "insert into ledger.stripe_charges (id, tenant_id, amount, amount_captured,"
            " amount_refunded, currency, status, paid, captured, refunded, disputed, created,"
            " description, metadata)"
            " select 'ch_' || g, 1 + g %% 50, g * 7 %% 100000, g * 7 %% 100000, 0, 'usd',"
            " 'succeeded', true, true, false, false,"
            " timestamptz '2024-03-09 12:00+00' + g * interval '1 second',"
            " md5(g::text), jsonb_build_object('order', g)"
            " from generate_series(%s::int8, %s::int8) g"
        )
        for low in range(0, inserts, TXN_ROWS):
            conn.execute(insert, (low, min(low + TXN_ROWS, inserts) - 1))
        for low in range(0, updates, TXN_ROWS):
            conn.execute(
                "update ledger.stripe_charges set amount_refunded = 1, refunded = true"
                " where id = any(array(select 'ch_' || g"
                " from generate_series(%s::int8, %s::int8) g))",
                (low, min(low + TXN_ROWS, updates) - 1),
            )
        for low in range(0, deletes, TXN_ROWS):
            conn.execute(
                "delete from ledger.stripe_charges where id = any(array(select 'ch_' || g"
                " from generate_series(%s::int8, %s::int8) g))",
                (inserts - 1 - low - min(TXN_ROWS, deletes - low) + 1, inserts - 1 - low),
            )
    return inserts + updates + deletes


def bench(dsn: str, changes: int, profile: bool, folder: Path) -> None:
    config = CaptureConfig(
        dsn=dsn, changelog_dir=folder / "_changelog", slot_name="bench", publication="bench"
    )
    with ChangeCapture(config) as capture:
        capture.start()
    with psycopg.connect(dsn, autocommit=True) as conn:
        slots.create_slot(conn, "bench_baseline")
    began = time.monotonic()
    written = workload(dsn, changes)
    print(f"workload: {written:,} row changes in {time.monotonic() - began:.1f} s")

    with psycopg.connect(dsn, autocommit=True) as conn:
        upto = slots.current_flush_lsn(conn)
        began = time.monotonic()
        row = conn.execute(
            "select count(*), sum(length(data)) from pg_logical_slot_peek_binary_changes("
            "'bench_baseline', %s::pg_lsn, null, 'proto_version', '1',"
            " 'publication_names', 'bench')",
            (str(upto),),
        ).fetchone()
        assert row is not None
        peek_s = time.monotonic() - began
        print(f"server peek: {row[0]:,} messages, {int(row[1]) / 1e6:.0f} MB in {peek_s:.2f} s")
        slots.drop_slot(conn, "bench_baseline")

    profiler = cProfile.Profile() if profile else None
    began = time.monotonic()
    with ChangeCapture(config) as capture:
        capture.start()
        if profiler is not None:
            profiler.enable()
        results = capture.run()
        if profiler is not None:
            profiler.disable()
    seconds = time.monotonic() - began
    landed = sum(r.manifest.changes for r in results)
    size = sum(p.stat().st_size for p in config.changelog_dir.glob("*.parquet"))
    print(
        f"capture: {landed:,} changes in {len(results)} batches, {seconds:.2f} s"
        f" -> {landed / seconds:,.0f} changes/s; {size / 1e6:.0f} MB of Parquet"
    )
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=1_000_000)
    parser.add_argument("--dsn", help="a migrated database to use instead of a new cluster")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="ledger-cdc-bench-"))
    folder.chmod(0o755)
    try:
        if args.dsn:
            bench(args.dsn, args.changes, args.profile, folder)
            return
        with throwaway_cluster(folder / "pg", find_free_port()) as cluster:
            dsn = cluster.dsn()
            with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
                conn.execute("create database ledger")
            migrate(dsn)
            bench(dsn, args.changes, args.profile, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
