"""The dashboard's reports: which mart, which columns, how totalled; read with DuckDB.

Every report reads one mart of one snapshot, for the tenants of a :class:`TenantScope` (bound as
a parameter, never formatted into SQL) and a period of account-local days (also bound). Mart and
column names come from the fixed :data:`REPORTS` registry, never from the request. Results are
Arrow tables, cached in memory under ``(report, tenants, period, data key)``, where the data key
digests the snapshot's source tags of the (tenant, day)s the result is built from
(:meth:`Snapshot.data_key`; :attr:`Report.depends` says which days). A new snapshot in which a
late dispute touched one old day changes the key of exactly the results whose days include it;
every other entry keeps serving, across snapshots. Results that do not come from the lake (the
reconciliation check's) are keyed by the snapshot version. Entries leave by LRU only.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa

from ledger_assets.dashboard.auth import TenantScope
from ledger_assets.dashboard.snapshot import Snapshot

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

    def source_days(self, period: Period) -> tuple[date | None, date | None]:
        """The days (inclusive; None: unbounded) whose source tags this report's rows for
        ``period`` depend on."""
        if self.depends == "to_end":
            return None, period.end
        if self.depends == "months":
            # Month starts in [start, end]: their months end before end + 31 days.
            return period.start, period.end + timedelta(days=31)
        return period.start, period.end


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


@dataclass(frozen=True)
class Period:
    start: date
    end: date  # inclusive

    @property
    def key(self) -> tuple[str, str]:
        return self.start.isoformat(), self.end.isoformat()


def _quote(name: str) -> str:
    # Registry names only (checked): never client text.
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a plain identifier: {name!r}")
    return f'"{name}"'


def _tenant_predicate(scope: TenantScope) -> tuple[str, list[Any]]:
    """The scope as SQL with its ids bound: ``tenant_id = ?`` or ``list_contains(?, ...)``."""
    if not scope.tenant_ids:
        return "false", []
    if len(scope.tenant_ids) == 1:
        return "tenant_id = ?", [scope.tenant_ids[0]]
    return "list_contains(?, tenant_id)", [list(scope.tenant_ids)]


class ResultCache:
    """An LRU of computed results by key, with hit and miss counts; thread-safe.

    ``computed`` counts the misses by kind: the first two items of a tuple key (e.g.
    ``("report", "pnl")``).

    Keys carry what a result depends on (see the module's docs), so an entry never needs to be
    invalidated explicitly: a change makes a new key, and the old entry ages out.
    """

    def __init__(self, max_entries: int = 1024) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.computed: Counter[Hashable] = Counter()

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
            self.misses += 1
            self.computed[key[:2] if isinstance(key, tuple) else key] += 1
        value = compute()  # outside the lock: concurrent misses compute twice, harmlessly
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value


class MartReader:
    """Runs report queries over a snapshot's Parquet files with DuckDB, through the cache."""

    def __init__(self, cache: ResultCache | None = None) -> None:
        self._con = duckdb.connect(":memory:")
        self.cache = cache or ResultCache()

    def _query(self, sql: str, params: list[Any]) -> pa.Table:
        cur = self._con.cursor()  # one cursor per call: cursors are per-thread connections
        try:
            return cur.execute(sql, params).to_arrow_table()
        finally:
            cur.close()

    def latest_day(self, snapshot: Snapshot, report: Report, scope: TenantScope) -> date | None:
        def compute() -> date | None:
            where, params = _tenant_predicate(scope)
            table = self._query(
                f"select max({_quote(report.date_column)}) as d "  # noqa: S608
                f"from read_parquet(?) where {where}",
                [str(snapshot.mart(report.mart)), *params],
            )
            value = table.column("d")[0].as_py()
            return value if isinstance(value, date) else None

        key = ("latest", report.name, scope.tenant_ids, self.data_key(snapshot, report, scope))
        result: date | None = self.cache.get_or_compute(key, compute)
        return result

    @staticmethod
    def data_key(
        snapshot: Snapshot, report: Report, scope: TenantScope, period: Period | None = None
    ) -> str:
        """What ``report``'s rows for ``scope`` (and ``period``; None: all days) depend on."""
        if report.depends == "snapshot":
            return f"v:{snapshot.version}"
        start, end = (None, None) if period is None else report.source_days(period)
        return snapshot.data_key(scope.tenant_ids, start, end)

    def default_period(self, snapshot: Snapshot, report: Report, scope: TenantScope) -> Period:
        """``default_days`` local days ending at the newest day the mart holds for the scope."""
        end = self.latest_day(snapshot, report, scope) or date.today()
        return Period(end - timedelta(days=report.default_days - 1), end)

    def report(
        self, snapshot: Snapshot, report: Report, scope: TenantScope, period: Period
    ) -> pa.Table:
        """The report's rows (``tenant_id`` first, then the registry's columns), ordered."""

        def compute() -> pa.Table:
            where, params = _tenant_predicate(scope)
            cols = ", ".join(["tenant_id", *(_quote(c.name) for c in report.columns)])
            order = ", ".join(["tenant_id", *(_quote(c) for c in report.order_by)])
            date_col = _quote(report.date_column)
            return self._query(
                f"select {cols} from read_parquet(?) "  # noqa: S608
                f"where {where} and {date_col} between ? and ? order by {order}",
                [str(snapshot.mart(report.mart)), *params, period.start, period.end],
            )

        data = self.data_key(snapshot, report, scope, period)
        key = ("report", report.name, scope.tenant_ids, period.key, data)
        table: pa.Table = self.cache.get_or_compute(key, compute)
        return table

    def overview(self, snapshot: Snapshot, scope: TenantScope, days: int = 30) -> pa.Table:
        """Per tenant and currency: revenue and net of the last ``days`` days each tenant has,
        and the reconciliation state (for the administrators' cross-tenant view)."""

        def compute() -> pa.Table:
            where, params = _tenant_predicate(scope)
            recon_where, recon_params = _tenant_predicate(scope)
            return self._query(
                f"""
                with pnl as (
                    select * from read_parquet(?) where {where}
                ), latest as (
                    select tenant_id, max(local_date) as last_day from pnl group by tenant_id
                ), recon as (
                    select tenant_id,
                           count(*) filter (where status = 'mismatch') as mismatched_days,
                           max(last_checked_at) as last_checked_at
                    from read_parquet(?) where {recon_where} group by tenant_id
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
                [str(snapshot.mart("daily_pnl")), *params,
                 str(snapshot.mart("reconciliation_status")), *recon_params, days],
            )  # fmt: skip

        # It joins the reconciliation mart: keyed by the snapshot, like that report.
        key = ("overview", scope.tenant_ids, days, snapshot.version)
        table: pa.Table = self.cache.get_or_compute(key, compute)
        return table

    def reconciliation_summary(
        self, snapshot: Snapshot, scope: TenantScope, period: Period
    ) -> dict[str, Any]:
        """The reconciliation state of the scope's days in ``period``, for views and exports."""
        table = self.report(snapshot, REPORTS["reconciliation"], scope, period)
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
