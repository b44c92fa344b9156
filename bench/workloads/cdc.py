"""``cdc``: 1M row changes decoded, landed and applied to the lake, vs. rebuilding the table.

The workload (``--rows`` changes, default from the harness): 70% inserts, 25% updates, 5%
deletes of stripe_charges in 1,000-row transactions over 50 tenants and ~8 local days, as the
capture's own tests use. Figures:

* **capture**: peek + decode pgoutput + typed Arrow + Parquet + fsync + slot advance;
* **apply**: the change log into the lake's partitions (DuckDB set logic, overlay writes);
* **end to end** against the naive alternative, rebuilding the whole table from Postgres;
* **initial snapshot** rows/s (DuckDB's postgres scanner → day files) against reading the same
  table into Python tuples through a psycopg server-side cursor (what ``pandas.read_sql`` does
  underneath, without even building a DataFrame).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import psycopg
import pyarrow as pa

from bench.core import Context, Figure, workload
from ledger_assets.lib.cdc import CaptureConfig, ChangeCapture
from ledger_assets.lib.cdc import slot as slots
from ledger_assets.lib.lake.layout import LakeLayout
from ledger_assets.lib.lake.snapshot import snapshot_table
from ledger_assets.lib.lake.sync import apply_landed, lake_tables, seed_lake, tenant_zones

TXN_ROWS = 1_000


def write_changes(dsn: str, changes: int) -> int:
    """The mixed workload; returns the number of row changes."""
    inserts, updates = int(changes * 0.70), int(changes * 0.25)
    deletes = changes - inserts - updates
    with psycopg.connect(dsn, autocommit=True) as conn:
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
            high = inserts - 1 - low
            conn.execute(
                "delete from ledger.stripe_charges"
                " where id = any(array(select 'ch_' || g"
                " from generate_series(%s::int8, %s::int8) g))",
                (high - min(TXN_ROWS, deletes - low) + 1, high),
            )
    return inserts + updates + deletes


def _python_read(dsn: str) -> tuple[int, float]:
    """The baseline read: a server-side cursor into Python tuples, then an Arrow table."""
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn, conn.cursor(name="read_sql") as cur:
        cur.itersize = 50_000
        cur.execute("select * from ledger.stripe_charges")
        rows = cur.fetchall()
        names = [d.name for d in cur.description or []]
    pa.table({n: [r[i] for r in rows] for i, n in enumerate(names) if n != "metadata"})
    return len(rows), time.perf_counter() - started


@workload("cdc")
def cdc(ctx: Context) -> list[Figure]:
    changes = min(ctx.options.rows, 1_000_000)
    folder = Path(tempfile.mkdtemp(prefix="bench-cdc-"))
    layout = LakeLayout(folder / "lake")
    try:
        with ctx.fresh_database("cdc") as dsn:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(
                    "insert into ledger.tenants (tenant_id, name, time_zone, default_currency,"
                    " stripe_account_id) select g, 'tenant ' || g, 'America/New_York', 'usd',"
                    " 'acct_' || g from generate_series(1, 50) g"
                )
            config = CaptureConfig(
                dsn=dsn, changelog_dir=layout.root / "_changelog", slot_name="bench_cdc",
                publication="bench_cdc", max_changes=2_000_000, max_seconds=600,
            )  # fmt: skip
            with ChangeCapture(config) as capture:
                state = capture.start()
            seed_lake(dsn, layout, state.origin)
            written = write_changes(dsn, changes)

            began, cpu = time.perf_counter(), time.process_time()
            with ChangeCapture(config) as capture:
                capture.start()
                capture.run()
            capture_s = time.perf_counter() - began
            capture_cpu = time.process_time() - cpu
            began, cpu = time.perf_counter(), time.process_time()
            applied = apply_landed(dsn, layout, config.changelog_dir, max_batches=1000)
            apply_s = time.perf_counter() - began
            apply_cpu = time.process_time() - cpu

            with psycopg.connect(dsn) as conn:
                charges = lake_tables(conn)["stripe_charges"]
                zones = tenant_zones(conn)
            began = time.perf_counter()
            snap = snapshot_table(dsn, layout, charges, zones)
            rebuild_s = time.perf_counter() - began
            read_rows, read_s = _python_read(dsn)
            with psycopg.connect(dsn, autocommit=True) as conn:
                slots.drop_slot(conn, "bench_cdc")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return [
        Figure("row changes written", written, "changes"),
        Figure("capture: decode + land (1M changes)", capture_s, "s", higher_is_better=False),
        Figure("apply to the lake", apply_s, "s", higher_is_better=False),
        # CPU of this process (not the Postgres backend's): comparable on a busy machine.
        Figure("capture CPU (client)", capture_cpu, "s", higher_is_better=False),
        Figure("apply CPU", apply_cpu, "s", higher_is_better=False),
        Figure("partitions rewritten", applied.partitions_changed, "parts"),
        Figure(
            "capture + apply vs full rebuild",
            capture_s + apply_s,
            "s",
            rebuild_s,
            higher_is_better=False,
        ),
        Figure(
            "snapshot rows/s vs Python cursor",
            snap.rows / snap.seconds,
            "rows/s",
            read_rows / read_s,
        ),
    ]
