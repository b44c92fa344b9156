"""``cdc_latency`` and ``cdc_catchup``: CDC under a steady writer, as the sensor runs it.

Both seed a small system of record (``--rows / 10``, at most 200k rows, over 90 days), build its
lake (``sync.build_lake``), then start a writer thread that commits small transactions at a
steady rate: each inserts ``ROWS_PER_TXN`` charges of one tenant created "now" and refunds
one seeded charge (a late change to an older partition). After every commit it reads
``pg_current_wal_lsn()``, a position at or after the commit's end.

* ``cdc_latency``: for ``LATENCY_SECONDS`` the consumer does what one sensor tick plus its apply
  run do (``ChangeCapture.capture_batch`` then ``sync.apply_landed``) every ``TICK_SECONDS``.
  A commit's latency is from its commit to the end of the first apply whose watermark reached
  its position, i.e. when its partitions' files had been replaced. Reported: p50/p95/max
  against the issue's 30 s p95; the baseline is the tick interval itself. Dagster's run launch
  (measured alone by ``bench late_dispute``) is not included.
* ``cdc_catchup``: the consumer is stopped for ``STOPPED_SECONDS`` while the writer keeps
  writing (an hour scaled down), then capture + apply run back to back, the writer still
  writing, until the lake's watermark passes the position of the last commit made while
  stopped. Reported: stopped seconds / drain seconds ("x real time", target at least 10x).

Both end by checking that every charge the writer inserted is in the lake.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import psycopg

from bench.core import Context, Figure, workload
from ledger_assets.lib.cdc import CaptureConfig, ChangeCapture
from ledger_assets.lib.cdc import slot as slots
from ledger_assets.lib.cdc.lsn import Lsn
from ledger_assets.lib.lake.layout import LakeLayout
from ledger_assets.lib.lake.reader import create_lake_view
from ledger_assets.lib.lake.sync import apply_landed, build_lake, lake_tables, read_lake_state
from ledger_assets.lib.synth.load import SeedSpec, seed_database

#: Transactions per second and rows inserted by each: ~200 row changes/s, about 100x the
#: average write rate of the 200M-row, 3-year target (~2 rows/s).
TXN_PER_SECOND = 50
ROWS_PER_TXN = 3
TICK_SECONDS = 10.0
LATENCY_SECONDS = 90.0
STOPPED_SECONDS = 150.0


@dataclass
class Writer:
    """Commits at a steady rate in a thread; records (commit time, position after it)."""

    dsn: str
    tenants: list[int]
    #: Existing charges, refunded one per transaction (a late change to an older partition).
    old_ids: list[str]
    commits: list[tuple[float, Lsn]] = field(default_factory=list)
    inserted: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bench-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()

    def _run(self) -> None:
        interval = 1.0 / TXN_PER_SECOND
        # Autocommit: each conn.transaction() is then a real transaction, not a savepoint of
        # one long transaction that would commit only when the writer stops.
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            began = time.monotonic()
            n = 0
            while not self._stop.is_set():
                tenant = self.tenants[n % len(self.tenants)]
                with conn.transaction():
                    conn.execute(
                        "insert into ledger.stripe_charges (id, tenant_id, amount,"
                        " amount_captured, amount_refunded, currency, status, paid, captured,"
                        " refunded, disputed, created)"
                        " select 'ch_live_' || %s || '_' || g, %s, 100 + g, 100 + g, 0, 'usd',"
                        " 'succeeded', true, true, false, false, now()"
                        " from generate_series(1, %s) g",
                        (n, tenant, ROWS_PER_TXN),
                    )
                    conn.execute(
                        "update ledger.stripe_charges set amount_refunded = amount_refunded + 1"
                        " where id = %s",
                        (self.old_ids[n % len(self.old_ids)],),
                    )
                committed = time.monotonic()
                row = conn.execute("select pg_current_wal_lsn()::text").fetchone()
                assert row is not None
                self.commits.append((committed, Lsn.parse(str(row[0]))))
                self.inserted += ROWS_PER_TXN
                n += 1
                # Hold the rate against the schedule, not the previous commit (no drift).
                delay = began + n * interval - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)


@dataclass
class Consumer:
    """One capture batch and the apply of what landed: a sensor tick and its run."""

    config: CaptureConfig
    layout: LakeLayout
    #: (end time, watermark) of every apply.
    applied: list[tuple[float, Lsn]] = field(default_factory=list)
    capture_s: float = 0.0
    apply_s: float = 0.0
    partitions: int = 0

    def tick(self) -> Lsn:
        began = time.monotonic()
        with ChangeCapture(self.config) as capture:
            capture.start()
            capture.capture_batch()
        captured = time.monotonic()
        result = apply_landed(self.config.dsn, self.layout, self.config.changelog_dir)
        self.capture_s += captured - began
        self.apply_s += time.monotonic() - captured
        self.partitions += result.partitions_changed
        end = read_lake_state(self.layout).applied_end
        assert end is not None
        self.applied.append((time.monotonic(), end))
        return end


def _setup(ctx: Context, dsn: str, folder: Path) -> tuple[CaptureConfig, LakeLayout, Writer]:
    rows = min(ctx.options.rows // 10, 200_000)
    seed_database(dsn, SeedSpec(seed=ctx.options.seed, tenants=20, days=90, target_rows=rows))
    layout = LakeLayout(folder / "lake")
    config = CaptureConfig(
        dsn=dsn, changelog_dir=layout.root / "_changelog", slot_name="bench_live",
        publication="bench_live",
    )  # fmt: skip
    build_lake(config, layout)
    with psycopg.connect(dsn) as conn:
        tenants = [int(str(r[0])) for r in conn.execute("select tenant_id from ledger.tenants")]
        old = conn.execute("select id from ledger.stripe_charges order by id limit 5000")
        old_ids = [str(r[0]) for r in old]
    return config, layout, Writer(dsn, tenants, old_ids)


def _lake_has_inserts(dsn: str, layout: LakeLayout) -> int:
    """Charges the writer inserted that the lake holds."""
    with psycopg.connect(dsn) as conn:
        charges = lake_tables(conn)["stripe_charges"]
    con = duckdb.connect()
    create_lake_view(con, layout, charges, name="lake_charges")
    row = con.execute("select count(*) from lake_charges where id like 'ch_live_%'").fetchone()
    con.close()
    return int(row[0]) if row else 0


def _finish(dsn: str, layout: LakeLayout, consumer: Consumer, writer: Writer) -> None:
    """Drain what the writer committed last; the lake must hold every inserted charge."""
    consumer.tick()
    held = _lake_has_inserts(dsn, layout)
    if held != writer.inserted:
        raise RuntimeError(f"the lake holds {held} of the {writer.inserted} inserted charges")


def _percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if values else 0.0


@workload("cdc_latency")
def cdc_latency(ctx: Context) -> list[Figure]:
    folder = Path(tempfile.mkdtemp(prefix="bench-cdc-live-"))
    try:
        with ctx.fresh_database("cdc_latency") as dsn:
            config, layout, writer = _setup(ctx, dsn, folder)
            consumer = Consumer(config, layout)
            writer.start()
            began = time.monotonic()
            ticks: list[float] = []
            while time.monotonic() - began < LATENCY_SECONDS:
                tick_began = time.monotonic()
                consumer.tick()
                ticks.append(time.monotonic() - tick_began)
                time.sleep(max(0.0, TICK_SECONDS - (time.monotonic() - tick_began)))
            writer.stop()
            split = (consumer.capture_s, consumer.apply_s, consumer.partitions)
            _finish(dsn, layout, consumer, writer)
            latencies = []
            for committed, lsn in writer.commits:
                done = next((t for t, end in consumer.applied if end >= lsn), None)
                assert done is not None
                if committed <= began + LATENCY_SECONDS:
                    latencies.append(done - committed)
            with psycopg.connect(dsn, autocommit=True) as conn:
                slots.drop_slot(conn, config.slot_name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return [
        Figure("commits sampled (every commit)", len(latencies), "txns"),
        Figure(
            "row changes/s written", len(latencies) * (ROWS_PER_TXN + 1) / LATENCY_SECONDS, "rows/s"
        ),
        Figure(
            "tick (capture + apply), mean", statistics.fmean(ticks), "s", higher_is_better=False
        ),
        Figure(
            "commit -> partition file, p50", _percentile(latencies, 50), "s", higher_is_better=False
        ),
        Figure(
            "commit -> partition file, p95 vs 30 s target",
            _percentile(latencies, 95),
            "s",
            30.0,
            higher_is_better=False,
        ),
        Figure("commit -> partition file, max", max(latencies), "s", higher_is_better=False),
        Figure("capture, all ticks", split[0], "s", higher_is_better=False),
        Figure("apply, all ticks", split[1], "s", higher_is_better=False),
        Figure("partitions rewritten, all ticks", split[2], "parts"),
    ]


@workload("cdc_catchup")
def cdc_catchup(ctx: Context) -> list[Figure]:
    folder = Path(tempfile.mkdtemp(prefix="bench-cdc-live-"))
    try:
        with ctx.fresh_database("cdc_catchup") as dsn:
            config, layout, writer = _setup(ctx, dsn, folder)
            consumer = Consumer(config, layout)
            writer.start()
            time.sleep(STOPPED_SECONDS)
            stopped_at = time.monotonic()
            backlog = [lsn for t, lsn in writer.commits if t <= stopped_at]
            target = backlog[-1]
            ticks = 0
            while consumer.tick() < target:
                ticks += 1
            drain_s = time.monotonic() - stopped_at
            split = (consumer.capture_s, consumer.apply_s, consumer.partitions)
            writer.stop()
            _finish(dsn, layout, consumer, writer)
            with psycopg.connect(dsn, autocommit=True) as conn:
                slots.drop_slot(conn, config.slot_name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return [
        Figure("backlog: commits while stopped", len(backlog), "txns"),
        Figure("backlog: row changes", len(backlog) * (ROWS_PER_TXN + 1), "rows"),
        Figure("drain (capture + apply, writer on)", drain_s, "s", higher_is_better=False),
        Figure("ticks to drain", ticks + 1, "ticks"),
        Figure("  of which capture (decode + land)", split[0], "s", higher_is_better=False),
        Figure("  of which apply", split[1], "s", higher_is_better=False),
        Figure("  partitions rewritten by the drain", split[2], "parts"),
        Figure("catch-up speed vs 10x target", STOPPED_SECONDS / drain_s, "x real", 10.0),
    ]
