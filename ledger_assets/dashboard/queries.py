"""The dashboard's reports: which mart, which columns, how totalled; read with DuckDB.

Every report reads one mart of one snapshot (its view on the snapshot's connection), for the
tenants of a :class:`TenantScope` (bound as a parameter, never formatted into SQL) and a period of
account-local days (also bound). Mart and column names come from the fixed :data:`REPORTS`
registry, never from the request. Results are Arrow tables, cached in memory under ``(report,
tenants, period, data key)``, where the data key digests the snapshot's source tags of the
(tenant, day)s the result is built from (:meth:`Snapshot.data_key`; :attr:`Report.depends` says
which days). A new snapshot in which a late dispute touched one old day changes the key of
exactly the results whose days include it; every other entry keeps serving, across snapshots.
Results that do not come from the lake (the reconciliation check's) are keyed by the snapshot
version. Entries leave by LRU only.

:meth:`MartReader.warm` computes every tenant's default views of a snapshot before it is served,
one query per report for all tenants, under the same keys the requests use.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import pyarrow as pa

from ledger_assets.dashboard.auth import TenantScope
from ledger_assets.dashboard.snapshot import Snapshot, WouldBlock, quote_identifier

Kind = Literal["date", "text", "money", "count", "rate", "timestamp", "bool"]
#: Which (tenant, day)s a report's rows for a period are built from:
#: ``period`` its own days; ``months`` the whole months of its month starts; ``to_end`` every
#: day up to its end (a running balance); ``snapshot`` not the lake at all.
Depends = Literal["period", "months", "to_end", "snapshot"]
Total = Literal["sum", "first", "last"] | None
MAX_PERIOD_DAYS = 3 * 366


@dataclass(frozen=True)
class Column:
    name: str
    label: str
    kind: Kind
    total: Total = None


@dataclass(frozen=True)
class Chart:
    kind: Literal["line", "bar"]
    #: Money or count columns plotted against the report's date, summed per day.
    series: tuple[str, ...]


@dataclass(frozen=True)
class Report:
    name: str
    title: str
    mart: str
    date_column: str
    columns: tuple[Column, ...]
    order_by: tuple[str, ...]
    default_days: int
    chart: Chart | None = None
    depends: Depends = "period"

    @property
    def has_currency(self) -> bool:
        return any(c.name == "currency" for c in self.columns)

    def covered(self, period: Period) -> Period:
        """The local days this report's rows for ``period`` are about: for monthly rows, the
        whole months starting in it (the period filters ``month_start``); else the period."""
        if self.depends != "months":
            return period
        first = period.start if period.start.day == 1 else _next_month(period.start)
        if first > period.end:  # no month starts in the period: no rows
            return period
        return Period(first, _next_month(period.end) - timedelta(days=1))

    def source_days(self, period: Period) -> tuple[date | None, date | None]:
        """The days (inclusive; None: unbounded) whose source tags this report's rows for
        ``period`` depend on."""
        if self.depends == "to_end":
            return None, period.end
        covered = self.covered(period)
        return covered.start, covered.end


def _next_month(day: date) -> date:
    """The first day of the month after ``day``'s."""
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def _m(name: str, label: str, total: Total = "sum") -> Column:
    return Column(name, label, "money", total)


def _n(name: str, label: str) -> Column:
    return Column(name, label, "count", "sum")


_DAY = Column("local_date", "Day", "date")
_CUR = Column("currency", "Currency", "text")

REPORTS: dict[str, Report] = {
    r.name: r
    for r in (
        Report(
            "pnl", "90-day P&L", "daily_pnl", "local_date",
            (_DAY, _CUR, _m("gross_charges", "Gross charges"), _m("refunds", "Refunds"),
             _m("disputes", "Disputes"), _m("dispute_reversals", "Dispute reversals"),
             _m("fees", "Fees"), _m("revenue", "Revenue"), _m("net", "Net"),
             _m("payouts", "Payouts"), _n("charge_count", "Charges"),
             _n("refund_count", "Refunds #"), _n("dispute_count", "Disputes #")),
            ("local_date", "currency"), 90, Chart("line", ("revenue", "net")),
        ),
        Report(
            "monthly_revenue", "Monthly revenue", "monthly_revenue", "month_start",
            (Column("month_start", "Month", "date"), _CUR,
             _m("gross_charges", "Gross charges"), _m("refunds", "Refunds"),
             _m("disputes", "Disputes"), _m("dispute_reversals", "Dispute reversals"),
             _m("revenue", "Revenue"), _m("fees", "Fees"), _m("net", "Net"),
             _n("days_reported", "Days")),
            ("month_start", "currency"), 366, Chart("bar", ("revenue",)), "months",
        ),
        Report(
            "disputes_cohort", "Disputes by charge cohort", "disputes_by_charge_cohort",
            "cohort_date",
            (Column("cohort_date", "Charge day", "date"), _CUR,
             _n("charges_succeeded", "Charges"), _m("charged_amount", "Charged"),
             _n("disputed_charges", "Disputed"), _n("inquiries", "Inquiries"),
             _m("disputed_amount", "Disputed amount"), _n("disputes_won", "Won"),
             _n("disputes_lost", "Lost"), _n("disputes_open", "Open"),
             _m("lost_amount", "Lost amount"), Column("dispute_rate", "Rate", "rate")),
            ("cohort_date", "currency"), 90, Chart("bar", ("disputed_charges",)),
        ),
        Report(
            "disputes_activity", "Disputes by activity day", "disputes_by_activity_date",
            "local_date",
            (_DAY, _CUR, _n("disputes_opened", "Opened"), _n("inquiries_opened", "Inquiries"),
             _m("disputed_amount", "Disputed amount"), _m("withdrawn", "Withdrawn"),
             _m("reinstated", "Reinstated"), _m("dispute_fees", "Dispute fees"),
             _n("charges_succeeded", "Charges"), Column("dispute_rate", "Rate", "rate")),
            ("local_date", "currency"), 90, Chart("bar", ("disputes_opened",)),
        ),
        Report(
            "payouts", "Payouts", "stripe_payouts", "local_date",
            (_DAY, Column("payout_id", "Payout", "text"), _CUR,
             Column("arrival_local_date", "Arrives", "date"), _m("amount", "Amount"),
             Column("status", "Status", "text"), Column("is_automatic", "Automatic", "bool"),
             Column("reconciliation_status", "Stripe reconciliation", "text"),
             _n("swept_transaction_count", "Transactions"), _m("swept_net", "Swept net"),
             _m("tie_out_difference", "Tie-out difference")),
            ("local_date", "payout_id"), 90, Chart("bar", ("amount",)),
        ),
        Report(
            "balance", "Stripe balance roll-forward", "stripe_balance_roll_forward",
            "local_date",
            (_DAY, _CUR, _m("opening_balance", "Opening", "first"),
             _m("activity", "Activity"), _m("payouts", "Payouts"),
             _m("closing_balance", "Closing", "last")),
            ("local_date", "currency"), 90, Chart("line", ("closing_balance",)), "to_end",
        ),
        Report(
            "bank_cash_flow", "Bank cash flow", "bank_cash_flow", "local_date",
            (_DAY, Column("account_name", "Account", "text"),
             Column("category", "Category", "text"), _CUR,
             _m("posted_inflow", "In"), _m("posted_outflow", "Out"), _m("posted_net", "Net"),
             _n("posted_count", "Posted #"), _m("pending_inflow", "Pending in"),
             _m("pending_outflow", "Pending out"), _n("pending_count", "Pending #")),
            ("local_date", "account_name", "category", "account_id"), 90,
            Chart("bar", ("posted_net",)),
        ),
        Report(
            "reconciliation", "Reconciliation status", "reconciliation_status", "local_date",
            (_DAY, _CUR, Column("status", "Status", "text"),
             _n("tables_compared", "Tables compared"), _n("tables_mismatched", "Mismatched"),
             Column("last_checked_at", "Last checked", "timestamp"),
             Column("watermark_lsn", "Watermark LSN", "text"),
             Column("mismatch_details", "Differences", "text")),
            ("local_date", "currency"), 90, None, "snapshot",
        ),
    )
}  # fmt: skip


#: The marts a snapshot loads into memory: those the reports read (the administrators'
#: overview reads the P&L's and the reconciliation's).
MARTS: tuple[str, ...] = tuple(sorted({r.mart for r in REPORTS.values()}))


@dataclass(frozen=True)
class Period:
    start: date
    end: date  # inclusive

    @property
    def key(self) -> tuple[str, str]:
        return self.start.isoformat(), self.end.isoformat()


def _in_scope(scope: TenantScope) -> tuple[str, list[Any]]:
    """The scope as SQL with its ids bound."""
    return "list_contains(?, tenant_id)", [list(scope.tenant_ids)]


class ResultCache:
    """An LRU of computed results by key, bounded in bytes, with hit and miss counts; thread-safe.

    ``computed`` counts the misses by kind: the first two items of a tuple key (e.g.
    ``("report", "pnl")``). Results stored by :meth:`put` (precomputed) are not misses.

    Keys carry what a result depends on (see the module's docs), so an entry never needs to be
    invalidated explicitly: a change makes a new key, and the old entry ages out.
    """

    def __init__(self, max_bytes: int = 512 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.computed: Counter[Hashable] = Counter()

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any] | None) -> Any:
        """The cached value of ``key``, else ``compute()`` stored; with no ``compute`` (on the
        event loop) a miss raises :class:`WouldBlock`."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key][0]
            if compute is None:
                raise WouldBlock(f"not cached: {key!r}"[:200])
            self.misses += 1
            self.computed[key[:2] if isinstance(key, tuple) else key] += 1
        value = compute()  # outside the lock: concurrent misses compute twice, harmlessly
        self.put(key, value)
        return value

    def put(self, key: Hashable, value: Any) -> None:
        size = _size(value)
        with self._lock:
            if key in self._entries:
                self._bytes -= self._entries.pop(key)[1]
            self._entries[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                self._bytes -= self._entries.popitem(last=False)[1][1]

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries


def _size(value: Any) -> int:
    """Roughly what ``value`` holds in memory: Arrow buffers and bytes exactly, else a guess."""
    if isinstance(value, pa.Table):
        return int(value.nbytes) + 256
    if isinstance(value, bytes):
        return len(value) + 64
    if isinstance(value, tuple):
        return sum(_size(v) for v in value)
    return 256


class MartReader:
    """Runs report queries on a snapshot's connection, through the cache.

    A reader made by :meth:`on_loop` shares the cache but never computes: a miss raises
    :class:`WouldBlock`, so the event loop answers what is cached and hands the rest to a thread.
    """

    def __init__(self, cache: ResultCache | None = None, *, blocking: bool = True) -> None:
        self.cache = cache if cache is not None else ResultCache()
        self.blocking = blocking

    def on_loop(self) -> MartReader:
        return MartReader(self.cache, blocking=False)

    def cached(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()`` through the cache (a miss on the event loop raises WouldBlock)."""
        return self.cache.get_or_compute(key, compute if self.blocking else None)

    @staticmethod
    def data_key(
        snapshot: Snapshot, report: Report, scope: TenantScope, period: Period | None = None
    ) -> str:
        """What ``report``'s rows for ``scope`` (and ``period``; None: all days) depend on."""
        if report.depends == "snapshot":
            return f"v:{snapshot.version}"
        start, end = (None, None) if period is None else report.source_days(period)
        return snapshot.data_key(scope.tenant_ids, start, end)

    def _latest_key(self, snapshot: Snapshot, report: Report, scope: TenantScope) -> Hashable:
        return ("latest", report.name, scope.tenant_ids, self.data_key(snapshot, report, scope))

    def _report_key(
        self, snapshot: Snapshot, report: Report, scope: TenantScope, period: Period
    ) -> Hashable:
        data = self.data_key(snapshot, report, scope, period)
        return ("report", report.name, scope.tenant_ids, period.key, data)

    @staticmethod
    def _latest_days(
        snapshot: Snapshot, report: Report, scopes: list[TenantScope]
    ) -> dict[TenantScope, date | None]:
        """The newest day of ``report``'s mart for each one-tenant scope, in one query."""
        tenants = [scope.single for scope in scopes]
        if not tenants:
            return {}
        # One tenant: an equality DuckDB prunes row groups with; many: one pass over all.
        where = "tenant_id = ?" if len(tenants) == 1 else "list_contains(?, tenant_id)"
        table = snapshot.query(
            f"select tenant_id, max({quote_identifier(report.date_column)}) as d "  # noqa: S608
            f"from {snapshot.table(report.mart)} where {where} group by tenant_id",
            [tenants[0] if len(tenants) == 1 else tenants],
        )
        newest = dict(zip(table.column("tenant_id").to_pylist(),
                          table.column("d").to_pylist(), strict=True))  # fmt: skip
        return {s: d if isinstance(d := newest.get(s.single), date) else None for s in scopes}

    @staticmethod
    def _rows(
        snapshot: Snapshot, report: Report, wanted: list[tuple[TenantScope, Period]]
    ) -> list[pa.Table]:
        """The report's rows for each (one-tenant scope, period) of ``wanted``: ``tenant_id``
        first, then the registry's columns, ordered; one query for all of them."""
        cols = ", ".join(
            ["m.tenant_id", *(f"m.{quote_identifier(c.name)}" for c in report.columns)]
        )
        order = ", ".join(["i", *(f"m.{quote_identifier(c)}" for c in report.order_by)])
        date_col = f"m.{quote_identifier(report.date_column)}"
        mart = snapshot.table(report.mart)
        if len(wanted) == 1:
            # A request's one tenant and period: a filter DuckDB prunes row groups with (the
            # join below, for the warm-up's many, takes about 4x as long for one).
            ((scope, period),) = wanted
            sql = (
                f"select 0 as i, {cols} from {mart} m "  # noqa: S608
                f"where m.tenant_id = ? and {date_col} between ? and ? order by {order}"
            )
            params: list[Any] = [scope.single, period.start, period.end]
        else:
            sql = f"""
                select w.i, {cols} from {mart} m join (
                    select unnest(?) as i, unnest(?) as tenant_id, unnest(?) as lo,
                           unnest(?) as hi
                ) w on m.tenant_id = w.tenant_id and {date_col} between w.lo and w.hi
                order by {order}
            """  # noqa: S608
            params = [list(range(len(wanted))), [s.single for s, _ in wanted],
                      [p.start for _, p in wanted], [p.end for _, p in wanted]]  # fmt: skip
        table = snapshot.query(sql, params)
        which = table.column("i").to_pylist()
        rows = table.drop_columns(["i"])
        return [
            rows.slice(lo, bisect.bisect_right(which, i) - lo)
            for i in range(len(wanted))
            for lo in [bisect.bisect_left(which, i)]
        ]

    def latest_day(self, snapshot: Snapshot, report: Report, scope: TenantScope) -> date | None:
        def compute() -> date | None:
            return self._latest_days(snapshot, report, [scope])[scope]

        result: date | None = self.cached(self._latest_key(snapshot, report, scope), compute)
        return result

    def default_period(self, snapshot: Snapshot, report: Report, scope: TenantScope) -> Period:
        """``default_days`` local days ending at the newest day the mart holds for the scope."""
        end = self.latest_day(snapshot, report, scope) or date.today()
        return Period(end - timedelta(days=report.default_days - 1), end)

    def report(
        self, snapshot: Snapshot, report: Report, scope: TenantScope, period: Period
    ) -> pa.Table:
        """The report's rows (``tenant_id`` first, then the registry's columns), ordered."""

        def compute() -> pa.Table:
            return self._rows(snapshot, report, [(scope, period)])[0]

        table: pa.Table = self.cached(self._report_key(snapshot, report, scope, period), compute)
        return table

    def warm(self, snapshot: Snapshot, seconds: float) -> dict[str, Any]:
        """Compute what a first request after ``snapshot`` is served would need, for every
        tenant: each report's default period and rows, the reconciliation state of the days
        they cover, and the administrators' overview. One query per report for all tenants;
        stops between reports after ``seconds``. Entries still valid (their source tags did not
        change) are kept, not recomputed."""
        started = time.monotonic()
        scopes = [TenantScope((t,)) for t in sorted(snapshot.tenants)]
        recon = REPORTS["reconciliation"]
        periods: dict[tuple[TenantScope, Period], None] = {}  # (scope, days) for reconciliation
        stored = done = 0
        for report in REPORTS.values():
            if time.monotonic() - started > seconds:
                break
            latest = {s: self._latest_key(snapshot, report, s) for s in scopes}
            missing = [s for s in scopes if latest[s] not in self.cache]
            for scope, day in self._latest_days(snapshot, report, missing).items():
                self.cache.put(latest[scope], day)
                stored += 1
            wanted = [(s, self.default_period(snapshot, report, s)) for s in scopes]
            if report is not recon:
                periods.update(((s, report.covered(p)), None) for s, p in wanted)
            else:
                periods.update((w, None) for w in wanted)
            stored += self._store_rows(snapshot, report, wanted)
            done += 1
        if time.monotonic() - started <= seconds:
            stored += self._store_rows(snapshot, recon, list(periods))
            for scope, days in periods:
                self.reconciliation_summary(snapshot, scope, days)
            if scopes:
                self.overview(snapshot, TenantScope(tuple(s.single for s in scopes)))
        return {"reports_warmed": done, "results_warmed": stored,
                "warm_seconds": round(time.monotonic() - started, 3)}  # fmt: skip

    def _store_rows(
        self, snapshot: Snapshot, report: Report, wanted: list[tuple[TenantScope, Period]]
    ) -> int:
        keys = [self._report_key(snapshot, report, s, p) for s, p in wanted]
        missing = [(w, k) for w, k in zip(wanted, keys, strict=True) if k not in self.cache]
        tables = self._rows(snapshot, report, [w for w, _ in missing]) if missing else []
        for (_, key), table in zip(missing, tables, strict=True):
            self.cache.put(key, table)
        return len(missing)

    def overview(self, snapshot: Snapshot, scope: TenantScope, days: int = 30) -> pa.Table:
        """Per tenant and currency: revenue and net of the last ``days`` days each tenant has,
        and the reconciliation state (for the administrators' cross-tenant view)."""

        def compute() -> pa.Table:
            where, params = _in_scope(scope)
            return snapshot.query(
                f"""
                with pnl as (
                    select * from {snapshot.table("daily_pnl")} where {where}
                ), latest as (
                    select tenant_id, max(local_date) as last_day from pnl group by tenant_id
                ), recon as (
                    select tenant_id,
                           count(*) filter (where status = 'mismatch') as mismatched_days,
                           max(last_checked_at) as last_checked_at
                    from {snapshot.table("reconciliation_status")} where {where}
                    group by tenant_id
                )
                select pnl.tenant_id, pnl.currency, latest.last_day,
                       cast(sum(pnl.revenue) as bigint) as revenue,
                       cast(sum(pnl.net) as bigint) as net,
                       coalesce(max(recon.mismatched_days), 0) as mismatched_days,
                       max(recon.last_checked_at) as last_checked_at
                from pnl join latest using (tenant_id)
                left join recon using (tenant_id)
                where pnl.local_date > latest.last_day - cast(? as integer)
                group by pnl.tenant_id, pnl.currency, latest.last_day
                order by pnl.tenant_id, pnl.currency
                """,  # noqa: S608
                [*params, *params, days],
            )

        # It joins the reconciliation mart: keyed by the snapshot, like that report.
        key = ("overview", scope.tenant_ids, days, snapshot.version)
        table: pa.Table = self.cached(key, compute)
        return table

    def reconciliation_summary(
        self, snapshot: Snapshot, scope: TenantScope, days: Period
    ) -> dict[str, Any]:
        """The reconciliation state of the scope's ``days``, for views and exports."""
        recon = REPORTS["reconciliation"]

        def compute() -> dict[str, Any]:
            return _summary(self.report(snapshot, recon, scope, days))

        key = ("recon", scope.tenant_ids, days.key, self.data_key(snapshot, recon, scope))
        summary: dict[str, Any] = self.cached(key, compute)
        return dict(summary)


def _summary(table: pa.Table) -> dict[str, Any]:
    statuses = table.column("status").to_pylist()
    checked = [t for t in table.column("last_checked_at").to_pylist() if t is not None]
    lsns = [
        (t, lsn)
        for t, lsn in zip(
            table.column("last_checked_at").to_pylist(),
            table.column("watermark_lsn").to_pylist(),
            strict=True,
        )
        if t is not None
    ]
    counts = {s: statuses.count(s) for s in ("match", "mismatch", "skipped")}
    if not statuses:
        overall = "unchecked"
    elif counts["mismatch"]:
        overall = "mismatch"
    elif counts["match"] == len(statuses):
        overall = "match"
    else:
        overall = "partial"
    last: datetime | None = max(checked) if checked else None
    return {
        "status": overall,
        "days_checked": len(statuses),
        **{f"days_{k}": v for k, v in counts.items()},
        "last_checked_at": last.isoformat() if last else None,
        "watermark_lsn": max(lsns)[1] if lsns else None,
    }


def format_minor(value: int, exponent: int) -> str:
    """Minor units as a major-unit string, exactly: ``-123456, 2`` → ``-1,234.56``."""
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), 10**exponent)
    text = f"{whole:,}"
    return f"{sign}{text}.{frac:0{exponent}d}" if exponent else f"{sign}{text}"


def local_time(value: datetime | None, zone: str) -> str | None:
    """An instant in the tenant's zone, e.g. ``2025-04-16 11:02:03 CEST``."""
    if value is None:
        return None
    return value.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S %Z")
