"""``stripe_backfill``: Stripe objects from the stand-in into Postgres through the real SDK.

Ours: ``raw_request`` pages → pydantic rows → COPY into a staging table → one merge per batch,
two accounts at a time, in a child process whose peak RSS is reported. The baseline is the
"before" of a six-hour nightly job: ``auto_paging_iter`` over the SDK's object model,
``to_dict()``, and one INSERT per row, on a slice of ``--baseline-rows`` objects (rates are
compared). Then an incremental re-run with nothing new, which must take under 5 s.

Scale: ``--rows`` is the generator's total across all tables; Stripe objects are ~85% of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from bench.core import Context, Figure, workload
from ledger_assets.lib.ingest.onboarding import sync_tenants_from_stripe
from ledger_assets.lib.ingest.stripe_pull import OBJECT_STREAMS, make_client
from ledger_assets.lib.ingest.stripe_records import validate_objects
from ledger_assets.lib.ingest.tables import STRIPE_TABLES
from ledger_assets.lib.sor.catalog import stripe_accounts
from ledger_assets.lib.standins import DEFAULT_STRIPE_API_KEY, StandinServers
from ledger_assets.lib.synth.spec import SeedSpec


def _child(dsn: str, api_base: str, workers: int) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable, "-m", "bench.stripe_child", "--dsn", dsn, "--api-base", api_base,
            "--api-key", DEFAULT_STRIPE_API_KEY, "--workers", str(workers),
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _naive(dsn: str, api_base: str, limit: int) -> tuple[int, float]:
    """auto_paging_iter + to_dict + row-by-row INSERT; returns (objects, seconds)."""
    client = make_client(DEFAULT_STRIPE_API_KEY, api_base)
    done = 0
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        for tenant_id, account in stripe_accounts(conn):
            for stream in OBJECT_STREAMS:
                listing = getattr(client.v1, stream).list(
                    params={"limit": 100}, options={"stripe_account": account}
                )
                for obj in listing.auto_paging_iter():
                    raw = obj.to_dict()
                    rows = validate_objects([raw], tenant_id, datetime.now(UTC))
                    for table, table_rows in rows.rows.items():
                        spec = next(t for t in STRIPE_TABLES.values() if t.name == table)
                        statement = sql.SQL(
                            "insert into {} ({}) values ({}) on conflict do nothing"
                        ).format(
                            sql.Identifier("ledger", table),
                            sql.SQL(", ").join(map(sql.Identifier, spec.columns)),
                            sql.SQL(", ").join(sql.Placeholder() * len(spec.columns)),
                        )
                        for row in table_rows:
                            conn.execute(statement, row)
                    conn.commit()
                    done += 1
                    if done >= limit:
                        return done, time.perf_counter() - started
    return done, time.perf_counter() - started


@workload("stripe_backfill")
def stripe_backfill(ctx: Context) -> list[Figure]:
    opts = ctx.options
    spec = SeedSpec.scale(opts.rows, tenants=opts.tenants, years=opts.years, seed=opts.seed)
    servers = StandinServers.start(spec, in_process=False, startup_timeout_s=600)
    try:
        with ctx.fresh_database("ingest") as dsn:
            with psycopg.connect(dsn, autocommit=True) as conn:
                sync_tenants_from_stripe(
                    conn, make_client(DEFAULT_STRIPE_API_KEY, servers.stripe_url)
                )
            ours = _child(dsn, servers.stripe_url, workers=2)
            again = _child(dsn, servers.stripe_url, workers=4)
        with ctx.fresh_database("naive") as dsn:
            with psycopg.connect(dsn, autocommit=True) as conn:
                sync_tenants_from_stripe(
                    conn, make_client(DEFAULT_STRIPE_API_KEY, servers.stripe_url)
                )
            naive_objects, naive_seconds = _naive(dsn, servers.stripe_url, opts.baseline_rows)
    finally:
        servers.stop()
    naive_rate = naive_objects / naive_seconds
    return [
        Figure("objects fetched (ours)", ours["fetched"], "objects"),
        Figure("backfill objects/s vs naive", ours["objects_per_second"], "obj/s", naive_rate),
        Figure("backfill seconds", ours["seconds"], "s"),
        Figure(
            "peak RSS of the backfill process", ours["peak_rss_mb"], "MB", higher_is_better=False
        ),
        Figure("incremental re-run, nothing new", again["seconds"], "s", higher_is_better=False),
    ]
