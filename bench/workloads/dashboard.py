"""``dashboard``: the standard report set over HTTP on the marts, against the same reports in SQL
over the Postgres system of record (the "before" architecture), plus throughput under load.

Seeds ``--rows`` over ``--tenants`` and ``--years``, builds the lake, the marts (``dbt run``)
and a published marts snapshot, picks the tenant with the most balance transactions, and then
measures, for every dashboard view of that tenant over the view's default period:

* process start, :data:`COLD_STARTS` times: a new dashboard process is spawned (the server
  prepares the published snapshot before it accepts connections: tenant directory, source tags,
  the marts loaded into memory, every tenant's default views computed). Measured: spawn to
  ready (interpreter and imports included) and the server's own preparation; then, from this
  process, the first request of each view for its default period (precomputed: what the page
  asks for first) and then for a chosen period (the last :data:`CHOSEN_DAYS` days: never
  precomputed, a genuine cache miss with its query and reconciliation summary); and the
  process's memory (VmRSS, VmHWM) with the snapshot open;
* new-snapshot cold: on a running, warm dashboard, :data:`NEW_SNAPSHOTS` times: a marts run that
  touched every tenant's last two days is published (the source tags of those days move, as a
  CDC tick's rebuild of yesterday and today leaves them; the marts are exported for real), and
  once the dashboard serves it, the first request of each view for its default period (what the
  page asks for) and for a chosen period (the last 30 days: never precomputed), from another
  process. Also the time from the export's end to the dashboard serving the snapshot (opening
  and warming it);
* warm: :data:`WARM_ROUNDS` rounds of every view on one running dashboard, and the server's
  CPU time per request (the rest of a request's latency is loopback HTTP and the client);
* Postgres: the same reports as plain SQL over ``ledger.*`` (the index on ``(tenant_id,
  created)`` bounds every scan by the period), :data:`WARM_ROUNDS` rounds on one open
  connection. Timed without HTTP or JSON, which flatters Postgres. The reconciliation view has
  no Postgres counterpart (it shows check results) and is left out of the comparison. Before
  timing, each report's per-currency totals from Postgres are compared with the dashboard's;
  a difference is printed and counted in "reports equal to Postgres";
* throughput: :data:`CLIENTS` concurrent clients (asyncio, one keep-alive connection each, in
  a separate process so the load generator does not share the server's GIL) cycle through the
  views for :data:`LOAD_SECONDS` s: requests/s and p95.

Latencies are wall time per request on loopback, client side (connect excluded: keep-alive);
warm rounds and the load come from another process with a bare HTTP/1.1 client
(:func:`_exchange`), as are the process-start and new-snapshot requests.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import duckdb
import httpx
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from starlette.applications import Starlette

from bench.core import Context, Figure, workload
from bench.workloads.marts import build_marts_bench, run_dbt
from ledger_assets.dashboard.app import DashboardConfig, build_dashboard
from ledger_assets.dashboard.auth import mint_token
from ledger_assets.dashboard.queries import REPORTS
from ledger_assets.dashboard.tenants import postgres_tenants
from ledger_assets.lib.asgi import serve_in_thread
from ledger_assets.lib.cdc import CaptureConfig
from ledger_assets.lib.cdc import slot as slots
from ledger_assets.lib.localtime import local_midnight
from ledger_assets.lib.marts.export import export_marts, mart_tables
from ledger_assets.lib.sor.pgcluster import find_free_port
from ledger_assets.lib.synth.load import SeedSpec, seed_database

COLD_STARTS = 5
NEW_SNAPSHOTS = 5
#: The chosen period of the new-snapshot measurement: this many days up to the default's end.
CHOSEN_DAYS = 30
WARM_ROUNDS = 30
CLIENTS = 50
LOAD_SECONDS = 15.0
SECRET = "bench-dashboard-secret-" + "b" * 40

# ------------------------------------------------------------------ the "before": SQL on PG
# Each query takes %(tenant)s, %(tz)s, the local period %(start)s..%(end)s (dates, inclusive),
# its UTC bounds %(lo)s/%(hi)s, and %(spine_start)s/%(spine_end)s: the days that get a row even
# without activity (the marts' day spine: the tenant's default currency, from its creation).
# The column names are the dashboard report's, so totals compare column by column.

_SPINE = sql.SQL("""
spine as (
    select t.default_currency as currency, d::date as local_date
    from ledger.tenants t,
         generate_series(greatest(%(spine_start)s::date,
                                  (t.created_at at time zone t.time_zone)::date),
                         %(spine_end)s::date, interval '1 day') as d
    where t.tenant_id = %(tenant)s
)""")

_DAILY = sql.SQL("""
with bt as (
    select currency, (created at time zone %(tz)s)::date as local_date,
           reporting_category as c, amount, fee, net
    from ledger.stripe_balance_transactions
    where tenant_id = %(tenant)s and created >= %(lo)s and created < %(hi)s
), activity as (
    select currency, local_date,
           sum(amount) filter (where c in ('charge', 'partial_capture_reversal')) as gross_charges,
           sum(amount) filter (where c in ('refund', 'refund_failure')) as refunds,
           sum(amount) filter (where c = 'dispute') as disputes,
           sum(amount) filter (where c = 'dispute_reversal') as dispute_reversals,
           coalesce(sum(amount) filter (where c = 'fee'), 0)
             - coalesce(sum(fee) filter (where c not in ('payout', 'payout_reversal')), 0) as fees,
           sum(amount) filter (where c in ('charge', 'partial_capture_reversal', 'refund',
                                           'refund_failure', 'dispute', 'dispute_reversal'))
               as revenue,
           sum(net) filter (where c not in ('payout', 'payout_reversal')) as net,
           sum(net) filter (where c in ('payout', 'payout_reversal')) as payouts,
           count(*) filter (where c in ('charge', 'partial_capture_reversal')) as charge_count,
           count(*) filter (where c in ('refund', 'refund_failure')) as refund_count,
           count(*) filter (where c = 'dispute') as dispute_count
    from bt group by currency, local_date
), {spine}, daily as (
    select local_date, currency,
           coalesce(gross_charges, 0) as gross_charges, coalesce(refunds, 0) as refunds,
           coalesce(disputes, 0) as disputes,
           coalesce(dispute_reversals, 0) as dispute_reversals, coalesce(fees, 0) as fees,
           coalesce(revenue, 0) as revenue, coalesce(net, 0) as net,
           coalesce(payouts, 0) as payouts, coalesce(charge_count, 0) as charge_count,
           coalesce(refund_count, 0) as refund_count,
           coalesce(dispute_count, 0) as dispute_count
    from spine full join activity using (currency, local_date)
)""").format(spine=_SPINE)

PG_REPORTS: dict[str, sql.SQL | sql.Composed] = {
    "pnl": sql.SQL("{daily} select * from daily order by local_date, currency").format(
        daily=_DAILY
    ),
    "monthly_revenue": sql.SQL("""{daily}
select date_trunc('month', local_date)::date as month_start, currency,
       sum(gross_charges) as gross_charges, sum(refunds) as refunds, sum(disputes) as disputes,
       sum(dispute_reversals) as dispute_reversals, sum(revenue) as revenue,
       sum(fees) as fees, sum(net) as net, count(*) as days_reported
from daily group by 1, 2 order by 1, 2""").format(daily=_DAILY),
    "balance": sql.SQL("""{daily}
, opening as (
    select currency, sum(net) as balance
    from ledger.stripe_balance_transactions
    where tenant_id = %(tenant)s and created < %(lo)s
    group by currency
), rolled as (
    select daily.local_date, daily.currency,
           coalesce(opening.balance, 0) + coalesce(sum(daily.net + daily.payouts) over (
               partition by daily.currency order by daily.local_date
               rows between unbounded preceding and 1 preceding), 0) as opening_balance,
           daily.net as activity, daily.payouts
    from daily left join opening using (currency)
)
select local_date, currency, opening_balance, activity, payouts,
       opening_balance + activity + payouts as closing_balance
from rolled order by local_date, currency""").format(daily=_DAILY),
    "disputes_cohort": sql.SQL("""
with ch as (
    select id, currency, amount, status, (created at time zone %(tz)s)::date as cohort_date
    from ledger.stripe_charges
    where tenant_id = %(tenant)s and created >= %(lo)s and created < %(hi)s
), cohort_charges as (
    select currency, cohort_date, count(*) as charges_succeeded, sum(amount) as charged_amount
    from ch where status = 'succeeded' group by 1, 2
), d as (
    select d.charge, d.currency, d.amount, d.status, ch.cohort_date,
           starts_with(d.status, 'warning_') as is_inquiry
    from ledger.stripe_disputes d join ch on d.charge = ch.id
), cohort_disputes as (
    select currency, cohort_date,
           count(distinct charge) filter (where not is_inquiry) as disputed_charges,
           count(*) filter (where is_inquiry) as inquiries,
           sum(amount) filter (where not is_inquiry) as disputed_amount,
           count(*) filter (where status = 'won') as disputes_won,
           count(*) filter (where status = 'lost') as disputes_lost,
           count(*) filter (where not is_inquiry and status not in ('won', 'lost'))
               as disputes_open,
           sum(amount) filter (where status = 'lost') as lost_amount
    from d group by 1, 2
), {spine}, keys as (
    select currency, local_date as cohort_date from spine
    union select currency, cohort_date from cohort_disputes
)
select keys.cohort_date, keys.currency,
       coalesce(cc.charges_succeeded, 0) as charges_succeeded,
       coalesce(cc.charged_amount, 0) as charged_amount,
       coalesce(cd.disputed_charges, 0) as disputed_charges,
       coalesce(cd.inquiries, 0) as inquiries,
       coalesce(cd.disputed_amount, 0) as disputed_amount,
       coalesce(cd.disputes_won, 0) as disputes_won,
       coalesce(cd.disputes_lost, 0) as disputes_lost,
       coalesce(cd.disputes_open, 0) as disputes_open,
       coalesce(cd.lost_amount, 0) as lost_amount,
       coalesce(cd.disputed_charges, 0)::float8 / nullif(cc.charges_succeeded, 0) as dispute_rate
from keys
left join cohort_charges cc using (currency, cohort_date)
left join cohort_disputes cd using (currency, cohort_date)
order by 1, 2""").format(spine=_SPINE),
    "disputes_activity": sql.SQL("""
with opened as (
    select currency, (created at time zone %(tz)s)::date as local_date,
           count(*) filter (where not starts_with(status, 'warning_')) as disputes_opened,
           count(*) filter (where starts_with(status, 'warning_')) as inquiries_opened,
           sum(amount) filter (where not starts_with(status, 'warning_')) as disputed_amount
    from ledger.stripe_disputes
    where tenant_id = %(tenant)s and created >= %(lo)s and created < %(hi)s
    group by 1, 2
), money as (
    select currency, (created at time zone %(tz)s)::date as local_date,
           sum(amount) filter (where reporting_category = 'dispute') as withdrawn,
           sum(amount) filter (where reporting_category = 'dispute_reversal') as reinstated,
           -sum(fee) as dispute_fees
    from ledger.stripe_balance_transactions
    where tenant_id = %(tenant)s and created >= %(lo)s and created < %(hi)s
      and reporting_category in ('dispute', 'dispute_reversal')
    group by 1, 2
), charged as (
    select currency, (created at time zone %(tz)s)::date as local_date,
           count(*) as charges_succeeded
    from ledger.stripe_charges
    where tenant_id = %(tenant)s and created >= %(lo)s and created < %(hi)s
      and status = 'succeeded'
    group by 1, 2
), {spine}, keys as (
    select currency, local_date from spine union select currency, local_date from opened
    union select currency, local_date from money union select currency, local_date from charged
)
select keys.local_date, keys.currency,
       coalesce(o.disputes_opened, 0) as disputes_opened,
       coalesce(o.inquiries_opened, 0) as inquiries_opened,
       coalesce(o.disputed_amount, 0) as disputed_amount,
       coalesce(m.withdrawn, 0) as withdrawn, coalesce(m.reinstated, 0) as reinstated,
       coalesce(m.dispute_fees, 0) as dispute_fees,
       coalesce(c.charges_succeeded, 0) as charges_succeeded,
       coalesce(o.disputes_opened, 0)::float8 / nullif(c.charges_succeeded, 0) as dispute_rate
from keys
left join opened o using (currency, local_date)
left join money m using (currency, local_date)
left join charged c using (currency, local_date)
order by 1, 2""").format(spine=_SPINE),
    "payouts": sql.SQL("""
with p as (
    select id, currency, amount, status, automatic, reconciliation_status,
           (created at time zone %(tz)s)::date as local_date,
           (arrival_date at time zone %(tz)s)::date as arrival_local_date
    from ledger.stripe_payouts
    where tenant_id = %(tenant)s and created >= %(lo)s and created < %(hi)s
), swept as (
    select payout, count(*) as n, sum(net) as swept_net
    from ledger.stripe_balance_transactions
    where payout in (select id from p) and reporting_category not in ('payout', 'payout_reversal')
    group by payout
)
select p.local_date, p.id as payout_id, p.currency, p.arrival_local_date, p.amount, p.status,
       p.automatic as is_automatic, p.reconciliation_status,
       coalesce(swept.n, 0) as swept_transaction_count,
       coalesce(swept.swept_net, 0) as swept_net,
       p.amount - coalesce(swept.swept_net, 0) as tie_out_difference
from p left join swept on swept.payout = p.id
order by p.local_date, p.id"""),
    "bank_cash_flow": sql.SQL("""
with {spine}, tx as (
    select t.date as local_date, t.account_id, a.name as account_name,
           coalesce(t.category_primary, 'UNCATEGORIZED') as category, t.currency, t.pending,
           case when t.amount_minor < 0 then -t.amount_minor else 0 end as inflow,
           case when t.amount_minor > 0 then t.amount_minor else 0 end as outflow
    from ledger.plaid_transactions t
    left join ledger.plaid_accounts a on a.account_id = t.account_id
    where t.tenant_id = %(tenant)s and t.date between %(start)s and %(end)s
), flows as (
    select local_date, account_id, max(account_name) as account_name, category,
           max(currency) as currency,
           coalesce(sum(inflow) filter (where not pending), 0) as posted_inflow,
           coalesce(sum(outflow) filter (where not pending), 0) as posted_outflow,
           count(*) filter (where not pending) as posted_count,
           coalesce(sum(inflow) filter (where pending), 0) as pending_inflow,
           coalesce(sum(outflow) filter (where pending), 0) as pending_outflow,
           count(*) filter (where pending) as pending_count
    from tx group by local_date, account_id, category
), quiet as (
    -- The mart's explicit zero row: an account with no transaction on a spine day.
    select s.local_date, a.account_id, a.name as account_name, 'NO_TRANSACTIONS' as category,
           a.currency, 0 as posted_inflow, 0 as posted_outflow, 0 as posted_count,
           0 as pending_inflow, 0 as pending_outflow, 0 as pending_count
    from spine s
    join ledger.plaid_accounts a on a.tenant_id = %(tenant)s
    where not exists (
        select from flows f where f.account_id = a.account_id and f.local_date = s.local_date
    )
), rows as (
    select * from flows union all select * from quiet
)
select local_date, account_name, category, currency, posted_inflow, posted_outflow,
       posted_inflow - posted_outflow as posted_net, posted_count, pending_inflow,
       pending_outflow, pending_count
from rows order by local_date, account_name, category, account_id""").format(spine=_SPINE),
}


@dataclass(frozen=True)
class Target:
    """The tenant and periods every measurement uses."""

    tenant: int
    time_zone: str
    #: report -> (start, end), inclusive local dates: the view's default period.
    periods: dict[str, tuple[date, date]]
    #: The last local day the lake holds for any tenant (the marts' day spine ends there).
    data_end: date


def _percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def _ms(values: Sequence[float], q: float) -> float:
    return _percentile(values, q) * 1000


# ---------------------------------------------------------------------------- the dashboard


@contextmanager
def _dashboard(root: Path, dsn: str) -> Iterator[tuple[str, Starlette]]:
    """A freshly built dashboard (empty caches) served on loopback; yields its URL and app."""
    config = DashboardConfig(export_root=root, secret=SECRET, tenant_loader=postgres_tenants(dsn))
    app = build_dashboard(config)
    with serve_in_thread(app, "127.0.0.1", find_free_port(), "bench-dashboard") as url:
        yield url, app


def _path(tenant: int, report: str, period: tuple[date, date]) -> str:
    return f"/api/tenants/{tenant}/reports/{report}?start={period[0]}&end={period[1]}"


def _default_paths(target: Target) -> dict[str, str]:
    """Each view's path for its default period (what the page asks for) -> the view."""
    return {_path(target.tenant, name, target.periods[name]): name for name in REPORTS}


def _chosen_paths(target: Target) -> dict[str, str]:
    """Each view's path for the last :data:`CHOSEN_DAYS` days of its default period (a period the
    dashboard never precomputes) -> the view."""
    paths = {}
    for name in REPORTS:
        end = target.periods[name][1]
        paths[_path(target.tenant, name, (end - timedelta(days=CHOSEN_DAYS - 1), end))] = name
    return paths


def _get(client: httpx.Client, path: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    response = client.get(path)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return elapsed, body


def _client(url: str, tenant: int) -> httpx.Client:
    token = mint_token(SECRET, tenant_id=tenant, ttl_seconds=3600, subject="bench")
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def _probe(root: Path, dsn: str, target_tenant: int) -> dict[str, tuple[date, date]]:
    """Each view's default period, as the dashboard itself chooses it (one throwaway start)."""
    periods: dict[str, tuple[date, date]] = {}
    with _dashboard(root, dsn) as (url, _), _client(url, target_tenant) as client:
        for name in REPORTS:
            _, body = _get(client, f"/api/tenants/{target_tenant}/reports/{name}")
            period = body["period"]
            periods[name] = (date.fromisoformat(period["start"]), date.fromisoformat(period["end"]))
    return periods


def _measure_warm(
    root: Path, dsn: str, target: Target
) -> tuple[dict[str, list[float]], dict[str, dict[str, Any]], float]:
    """(warm latencies, one response body) per report, and the server's CPU per request."""
    warm: dict[str, list[float]] = {name: [] for name in REPORTS}
    bodies: dict[str, dict[str, Any]] = {}
    with _dashboard(root, dsn) as (url, _), _client(url, target.tenant) as client:
        for name in REPORTS:
            _, bodies[name] = _get(client, _path(target.tenant, name, target.periods[name]))
        # From another process, as a browser is: not sharing the server's GIL.
        paths = _default_paths(target)
        token = mint_token(SECRET, tenant_id=target.tenant, ttl_seconds=3600, subject="bench")
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            pool.submit(int).result()  # the worker started: its start-up is not the server's
            # This process serves the dashboard (its main thread waits): its CPU is the server's.
            cpu = time.process_time()
            timed = pool.submit(run_rounds, url, token, list(paths), WARM_ROUNDS).result()
            server_cpu = time.process_time() - cpu
    for path, latencies in timed.items():
        warm[paths[path]] += latencies
    return warm, bodies, server_cpu / (WARM_ROUNDS * len(paths))


def _until_ready(url: str, server: subprocess.Popen[bytes]) -> dict[str, Any]:
    """Poll the readiness endpoint (the socket opens only once the snapshot is prepared) until
    it says ready; its body (what preparing the snapshot took)."""
    while server.poll() is None:
        try:
            response = httpx.get(f"{url}/readyz", timeout=5)
        except httpx.TransportError:
            time.sleep(0.02)
            continue
        if response.status_code != 200:
            raise RuntimeError(f"the dashboard started but is not ready: {response.text}")
        prepared: dict[str, Any] = response.json()["prepared"]
        return prepared
    raise RuntimeError(f"the dashboard process ended with {server.returncode} before serving")


def _memory(pid: int) -> dict[str, int]:
    """The process's resident set now and at its peak, in bytes (Linux /proc)."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if ":" in line)
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}


@dataclass(frozen=True)
class ProcessStarts:
    """Per start: process start to ready, the server's preparation (its ``/readyz``), memory;
    per report: first requests."""

    ready: list[float]
    prepared: list[dict[str, Any]]
    default: dict[str, list[float]]
    chosen: dict[str, list[float]]
    memory: list[dict[str, int]]


def _measure_process_starts(root: Path, dsn: str, target: Target) -> ProcessStarts:
    default: dict[str, list[float]] = {name: [] for name in REPORTS}
    chosen: dict[str, list[float]] = {name: [] for name in REPORTS}
    ready: list[float] = []
    prepared: list[dict[str, Any]] = []
    memory: list[dict[str, int]] = []
    paths, thirty = _default_paths(target), _chosen_paths(target)
    token = mint_token(SECRET, tenant_id=target.tenant, ttl_seconds=3600, subject="bench")
    for _ in range(COLD_STARTS):
        port = find_free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "LEDGER_PG_DSN": dsn, "LEDGER_STATE_DIR": str(root.parent),
               "LEDGER_DASHBOARD_SECRET": SECRET, "LEDGER_DASHBOARD_PORT": str(port)}  # fmt: skip
        started = time.perf_counter()
        # The dashboard's own entry point in a new interpreter: a real process start.
        server = subprocess.Popen(
            [sys.executable, "-m", "ledger_assets.dashboard"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            prepared.append(_until_ready(url, server))
            ready.append(time.perf_counter() - started)
            # Default periods first (the page's first requests), then the never-computed ones.
            timed = run_rounds(url, token, [*paths, *thirty], 1)
            for path, name in paths.items():
                default[name] += timed[path]
            for path, name in thirty.items():
                chosen[name] += timed[path]
            memory.append(_memory(server.pid))
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return ProcessStarts(ready, prepared, default, chosen, memory)


@dataclass(frozen=True)
class NewSnapshots:
    """Per report: first-request latencies after each new snapshot; and the snapshots' lag."""

    default: dict[str, list[float]]
    chosen: dict[str, list[float]]
    #: From the export's end to the dashboard serving the snapshot, seconds.
    lag: list[float]
    #: What the dashboard's warm-up of the last one did (results, seconds, finished reports).
    warmed: dict[str, Any]


def _publish_touching(database: Path, root: Path, since: date, source_lsn: str | None) -> str:
    """Move the source tags of every tenant's days from ``since`` on, then export the marts: the
    snapshot a marts run that rebuilt those days publishes. Returns its stamp."""
    con = duckdb.connect(str(database))
    try:
        con.execute(
            "update marts.marts.source_positions set max_lsn = max_lsn + 1 where local_date >= ?",
            [since],
        )
    finally:
        con.close()
    exported = export_marts(database, "marts", mart_tables(database, "marts"), root,
                            source_lsn=source_lsn)  # fmt: skip
    return exported.snapshot.name


def _measure_new_snapshots(
    root: Path, database: Path, dsn: str, target: Target, source_lsn: str | None
) -> NewSnapshots:
    default: dict[str, list[float]] = {name: [] for name in REPORTS}
    chosen: dict[str, list[float]] = {name: [] for name in REPORTS}
    lag: list[float] = []
    paths, thirty = _default_paths(target), _chosen_paths(target)
    token = mint_token(SECRET, tenant_id=target.tenant, ttl_seconds=3600, subject="bench")
    with (
        _dashboard(root, dsn) as (url, app),
        _client(url, target.tenant) as client,
        ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool,
    ):
        pool.submit(run_rounds, url, token, list(paths), 1).result()  # a dashboard in use
        for _ in range(NEW_SNAPSHOTS):
            stamp = _publish_touching(database, root, target.data_end - timedelta(days=1),
                                      source_lsn)  # fmt: skip
            published = time.perf_counter()
            while client.get("/api/version").json()["version"] != stamp:
                time.sleep(0.01)
            lag.append(time.perf_counter() - published)
            # From another process with the bare client, as the warm rounds (httpx in this
            # process would share the server's GIL and add its own CPU).
            timed = pool.submit(run_rounds, url, token, [*paths, *thirty], 1).result()
            for path, name in paths.items():
                default[name] += timed[path]
            for path, name in thirty.items():
                chosen[name] += timed[path]
        warmed = dict(app.state.snapshots.current().warmed)
    return NewSnapshots(default, chosen, lag, warmed)


# --------------------------------------------------------------------------------- Postgres


def _pg_params(target: Target, report: str) -> dict[str, Any]:
    start, end = target.periods[report]
    lo, hi = start, end + timedelta(days=1)
    spine_start, spine_end = start, end
    if report == "monthly_revenue":
        # Whole months whose first day is in the period (the view filters month_start).
        first = (
            start if start.day == 1 else (start.replace(day=28) + timedelta(days=4)).replace(day=1)
        )
        lo = first
        hi = (end.replace(day=28) + timedelta(days=4)).replace(day=1)
        spine_start, spine_end = first, min(hi - timedelta(days=1), target.data_end)
    elif report in ("balance", "bank_cash_flow"):
        spine_end = min(end, target.data_end)
    return {
        "tenant": target.tenant, "tz": target.time_zone, "start": start, "end": end,
        "lo": local_midnight(lo, target.time_zone), "hi": local_midnight(hi, target.time_zone),
        "spine_start": spine_start, "spine_end": spine_end,
    }  # fmt: skip


def _pg_query(conn: psycopg.Connection[dict[str, Any]], target: Target, report: str) -> Any:
    return conn.execute(PG_REPORTS[report], _pg_params(target, report)).fetchall()


def _measure_postgres(dsn: str, target: Target) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {name: [] for name in PG_REPORTS}
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        for _ in range(WARM_ROUNDS):
            for name in PG_REPORTS:
                started = time.perf_counter()
                _pg_query(conn, target, name)
                timings[name].append(time.perf_counter() - started)
    return timings


def _totals(report: str, rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per currency, the dashboard's totals (sum / first / last per column) of ``rows``."""
    spec = REPORTS[report]
    out: dict[str, dict[str, int]] = {}
    for currency in sorted({str(r["currency"]) for r in rows}):
        mine = [r for r in rows if r["currency"] == currency]
        values = {"rows": len(mine)}
        for col in spec.columns:
            if col.total is None:
                continue
            picked = [int(r[col.name]) for r in mine if r[col.name] is not None]
            if col.total == "sum":
                values[col.name] = sum(picked)
            else:
                values[col.name] = (
                    (picked[0] if col.total == "first" else picked[-1]) if picked else 0
                )
        out[currency] = values
    return out


def _compare(dsn: str, target: Target, bodies: dict[str, dict[str, Any]]) -> int:
    """How many reports' Postgres totals equal the dashboard's; prints every difference."""
    equal = 0
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        for name in PG_REPORTS:
            pg = _totals(name, _pg_query(conn, target, name))
            shown = {
                t["currency"]: {"rows": t["rows"], **t["values"]} for t in bodies[name]["totals"]
            }
            if pg == shown:
                equal += 1
            else:
                print(
                    f"dashboard bench: {name} differs from Postgres:\n  pg   {pg}\n  dash {shown}"
                )
    return equal


# --------------------------------------------------------------------------------- the load


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, path: str, token: str
) -> int:
    """One GET on a keep-alive HTTP/1.1 connection, its response read whole; the status.

    Bare asyncio streams, not httpx: httpx spent about 1.8 ms of CPU per request, nine times
    the dashboard's own 0.2 ms, so on 2 shared cores a client built on it measured itself."""
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


def run_rounds(url: str, token: str, paths: list[str], rounds: int) -> dict[str, list[float]]:
    """``rounds`` times every path, one request at a time on one connection: latencies per
    path. Runs in its own process (top-level so a spawned process can import it)."""
    address = httpx.URL(url)

    async def main() -> dict[str, list[float]]:
        timed: dict[str, list[float]] = {path: [] for path in paths}
        reader, writer = await asyncio.open_connection(str(address.host), address.port)
        try:
            for _ in range(rounds):
                for path in paths:
                    started = time.perf_counter()
                    status = await _exchange(
                        reader, writer, f"{address.host}:{address.port}", path, token
                    )
                    timed[path].append(time.perf_counter() - started)
                    if status != 200:
                        raise RuntimeError(f"{path}: HTTP {status}")
        finally:
            writer.close()
        return timed

    return asyncio.run(main())


def run_load(
    url: str, token: str, paths: list[str], clients: int, seconds: float
) -> dict[str, Any]:
    """``clients`` concurrent clients cycling through ``paths`` for ``seconds``.

    Each client is one keep-alive HTTP/1.1 connection, as separate users are (see
    :func:`_exchange`). Runs in its own process (top-level so a spawned process can import it).
    """
    address = httpx.URL(url)

    async def main() -> dict[str, Any]:
        latencies: list[float] = []
        errors = 0
        deadline = time.perf_counter() + seconds

        async def one(offset: int) -> None:
            nonlocal errors
            reader, writer = await asyncio.open_connection(str(address.host), address.port)
            try:
                for path in itertools.islice(itertools.cycle(paths), offset, None):
                    if time.perf_counter() >= deadline:
                        return
                    started = time.perf_counter()
                    status = await _exchange(
                        reader, writer, f"{address.host}:{address.port}", path, token
                    )
                    latencies.append(time.perf_counter() - started)
                    errors += status != 200
            finally:
                writer.close()

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(i) for i in range(clients)))
        return {"latencies": latencies, "errors": errors, "seconds": time.perf_counter() - started,
                "client_cpu": time.process_time() - cpu}  # fmt: skip

    return asyncio.run(main())


def _measure_load(root: Path, dsn: str, target: Target) -> dict[str, Any]:
    paths = list(_default_paths(target))
    token = mint_token(SECRET, tenant_id=target.tenant, ttl_seconds=3600, subject="bench-load")
    with _dashboard(root, dsn) as (url, _), _client(url, target.tenant) as client:
        for path in paths:  # warm, as a dashboard under steady use is
            _get(client, path)
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            # This process serves the dashboard (its main thread waits): its CPU is the server's.
            cpu = time.process_time()
            result: dict[str, Any] = pool.submit(
                run_load, url, token, paths, CLIENTS, LOAD_SECONDS
            ).result()
            result["server_cpu"] = time.process_time() - cpu
    return result


# ------------------------------------------------------------------------------- the workload


def _build_marts(dsn: str, folder: Path, config: CaptureConfig) -> tuple[Path, Path, str | None]:
    """Lake, marts (``dbt run``) and a published snapshot; returns the export root, the marts
    database and the lake position the marts reflect."""
    bench = build_marts_bench(dsn, folder, config)
    run_dbt(bench.project, bench.state, "run")
    root = bench.state / "marts"
    export_marts(bench.database, "marts", mart_tables(bench.database, "marts"), root,
                 source_lsn=bench.prepared.applied_lsn)  # fmt: skip
    return root, bench.database, bench.prepared.applied_lsn


def _target(dsn: str, root: Path) -> Target:
    """The tenant with the most balance transactions, and the periods the dashboard picks."""
    with psycopg.connect(dsn) as conn:
        tenant, zone = conn.execute(
            "select bt.tenant_id, t.time_zone from ledger.stripe_balance_transactions bt "
            "join ledger.tenants t using (tenant_id) "
            "group by bt.tenant_id, t.time_zone order by count(*) desc limit 1"
        ).fetchone() or (None, None)
        (data_end,) = conn.execute(
            "select max((bt.created at time zone t.time_zone)::date) "
            "from ledger.stripe_balance_transactions bt join ledger.tenants t using (tenant_id)"
        ).fetchone() or (None,)
    if tenant is None or data_end is None:
        raise RuntimeError("the seed holds no balance transactions")
    return Target(int(tenant), str(zone), _probe(root, dsn, int(tenant)), data_end)


def _figures(
    starts: ProcessStarts,
    warm: dict[str, list[float]],
    warm_cpu: float,
    pg: dict[str, list[float]],
    load: dict[str, Any],
    equal: int,
    fresh: NewSnapshots,
) -> list[Figure]:
    def flat(by_report: dict[str, list[float]], names: Callable[[str], bool]) -> list[float]:
        return [v for name, values in by_report.items() if names(name) for v in values]

    def shared(name: str) -> bool:
        return name in PG_REPORTS

    def every(_: str) -> bool:
        return True

    n, m = len(REPORTS), len(PG_REPORTS)
    pg_all = flat(pg, every)
    figures = [
        Figure(f"warm p50, {n} views", _ms(flat(warm, every), 50), "ms", None, False),
        Figure(f"warm p95, {n} views", _ms(flat(warm, every), 95), "ms", None, False),
        Figure("warm: server CPU per request", warm_cpu * 1000, "ms", None, False),
        Figure("new snapshot: served after (p95)", _ms(fresh.lag, 95), "ms", None, False),
        Figure("new snapshot: warm-up (last)", fresh.warmed.get("warm_seconds", 0) * 1000,
               "ms", None, False),
        Figure(f"new snapshot, default: p50, {n} views", _ms(flat(fresh.default, every), 50),
               "ms", None, False),
        Figure(f"new snapshot, default: p95, {n} views", _ms(flat(fresh.default, every), 95),
               "ms", None, False),
        Figure(f"new snapshot, {CHOSEN_DAYS} d: p50, {n} views",
               _ms(flat(fresh.chosen, every), 50), "ms", None, False),
        Figure(f"new snapshot, {CHOSEN_DAYS} d: p95, {n} views",
               _ms(flat(fresh.chosen, every), 95), "ms", None, False),
        Figure("process start: spawn to ready (p50)", _percentile(starts.ready, 50), "s",
               None, False),
        Figure("process start: snapshot prepared in (p50)",
               _percentile([w["ready_seconds"] for w in starts.prepared], 50), "s", None, False),
        Figure("process start: marts loaded in (p50)",
               _percentile([w["open_seconds"] for w in starts.prepared], 50), "s", None, False),
        Figure(f"process start, default: p50, {n} views", _ms(flat(starts.default, every), 50),
               "ms", None, False),
        Figure(f"process start, default: p95, {n} views", _ms(flat(starts.default, every), 95),
               "ms", None, False),
        Figure(f"process start, {CHOSEN_DAYS} d: p50, {n} views",
               _ms(flat(starts.chosen, every), 50), "ms", None, False),
        Figure(f"process start, {CHOSEN_DAYS} d: p95, {n} views",
               _ms(flat(starts.chosen, every), 95), "ms", None, False),
        Figure("dashboard RSS, snapshot open (max)",
               max(m["VmRSS"] for m in starts.memory) / 2**20, "MiB", None, False),
        Figure("dashboard peak RSS (max)",
               max(m["VmHWM"] for m in starts.memory) / 2**20, "MiB", None, False),
        Figure(f"p50: warm vs Postgres ({m} reports)", _ms(flat(warm, shared), 50),
               "ms", _ms(pg_all, 50), False),
        Figure(f"p95: warm vs Postgres ({m} reports)", _ms(flat(warm, shared), 95),
               "ms", _ms(pg_all, 95), False),
        Figure(f"p95: new snapshot vs Postgres ({m})", _ms(flat(fresh.default, shared), 95),
               "ms", _ms(pg_all, 95), False),
        Figure(f"p95: new snap. {CHOSEN_DAYS} d vs Postgres ({m})",
               _ms(flat(fresh.chosen, shared), 95), "ms", _ms(pg_all, 95), False),
        Figure(f"p95: process start vs Postgres ({m})", _ms(flat(starts.default, shared), 95),
               "ms", _ms(pg_all, 95), False),
        Figure(f"p95: proc. start {CHOSEN_DAYS} d vs Postgres ({m})",
               _ms(flat(starts.chosen, shared), 95), "ms", _ms(pg_all, 95), False),
    ]  # fmt: skip
    for name in REPORTS:
        base = _ms(pg[name], 95) if name in pg else None
        figures.append(Figure(f"p95 warm {name}", _ms(warm[name], 95), "ms", base, False))
    latencies = load["latencies"]
    figures += [
        Figure(f"{CLIENTS} clients: requests/s", len(latencies) / load["seconds"], "req/s"),
        Figure(f"{CLIENTS} clients: p95", _ms(latencies, 95), "ms", None, False),
        Figure(f"{CLIENTS} clients: non-200 answers", load["errors"], "req", None, False),
        Figure(
            f"{CLIENTS} clients: server CPU per request",
            load["server_cpu"] / len(latencies) * 1000,
            "ms",
            None,
            False,
        ),
        Figure(
            f"{CLIENTS} clients: load tool CPU per request",
            load["client_cpu"] / len(latencies) * 1000,
            "ms",
            None,
            False,
        ),
        Figure("reports equal to Postgres (totals)", equal, "reports"),
    ]
    return figures


@workload("dashboard")
def dashboard(ctx: Context) -> list[Figure]:
    opts = ctx.options
    spec = SeedSpec.scale(opts.rows, tenants=opts.tenants, years=opts.years, seed=opts.seed)
    folder = Path(tempfile.mkdtemp(prefix="ledger-bench-dashboard-"))
    with ctx.fresh_database("dashboard") as dsn:
        seeded = seed_database(dsn, spec)
        name = str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])
        config = CaptureConfig(
            dsn=dsn, changelog_dir=folder / "lake" / "_changelog",
            slot_name=f"lake_{name}", publication=f"lake_{name}",
        )  # fmt: skip
        try:
            started = time.monotonic()
            root, database, applied_lsn = _build_marts(dsn, folder, config)
            built = time.monotonic() - started
            target = _target(dsn, root)
            with psycopg.connect(dsn) as conn:
                (tenant_rows,) = conn.execute(
                    "select count(*) from ledger.stripe_balance_transactions where tenant_id = %s",
                    (target.tenant,),
                ).fetchone() or (0,)
            starts = _measure_process_starts(root, dsn, target)
            warm, bodies, warm_cpu = _measure_warm(root, dsn, target)
            equal = _compare(dsn, target, bodies)
            pg = _measure_postgres(dsn, target)
            load = _measure_load(root, dsn, target)
            fresh = _measure_new_snapshots(root, database, dsn, target, applied_lsn)
        finally:
            with psycopg.connect(dsn, autocommit=True) as conn:
                slots.drop_slot(conn, config.slot_name)
            shutil.rmtree(folder, ignore_errors=True)
    head = [
        Figure(f"seed rows ({spec.tenants} tenants)", seeded.total_rows, "rows"),
        Figure(f"tenant {target.tenant}: balance transactions", tenant_rows, "rows"),
        Figure("lake + marts + snapshot build", built, "s", None, False),
    ]
    return head + _figures(starts, warm, warm_cpu, pg, load, equal, fresh)
