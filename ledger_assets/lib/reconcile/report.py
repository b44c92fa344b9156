"""The reconciliation's result types: what a cycle compared, what differed, and why."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from ledger_assets.lib.marts.contracts import RECONCILIATION_RESULTS

#: Drill-down entries kept in Dagster metadata (the results table holds every group).
METADATA_MISMATCHES = 50
METADATA_VIOLATIONS = 50
#: Differing keys listed per results row (the contract's ``differing_keys``).
RESULT_KEYS = 10

Status = Literal["pass", "fail", "skipped", "deferred"]

SIDES = ("pg", "lake")
#: One compared (table, tenant, day, currency, category) group: both sides' totals.
GROUPS = pa.schema(
    [
        pa.field("table_name", pa.string()),
        pa.field("tenant_id", pa.int32()),
        pa.field("local_date", pa.date32()),
        pa.field("currency", pa.string()),
        pa.field("category", pa.string()),
        *(
            pa.field(f"{side}_{slot}", pa.int64())
            for side in SIDES
            for slot in ("rows", "amount", "fee", "net")
        ),
    ]
)


@dataclass(frozen=True)
class ReconcileScope:
    """Which partitions a cycle compares.

    ``full``: every partition. ``incremental``: partitions changed since the last cycle, last
    cycle's deferred and failed ones, and a rolling slice of days (state in ``state_dir``).
    ``partitions``: exactly ``partitions`` ((tenant_id, local_date)) in every table.
    """

    kind: Literal["full", "incremental", "partitions"]
    partitions: frozenset[tuple[int, date]] = frozenset()


@dataclass(frozen=True)
class Totals:
    """Row count and money slots of one group, exact integer minor units."""

    rows: int
    amount: int
    fee: int
    net: int

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            self.rows + other.rows,
            self.amount + other.amount,
            self.fee + other.fee,
            self.net + other.net,
        )

    def __sub__(self, other: Totals) -> Totals:
        return Totals(
            self.rows - other.rows,
            self.amount - other.amount,
            self.fee - other.fee,
            self.net - other.net,
        )


@dataclass(frozen=True)
class Mismatch:
    """One (table, tenant, day, currency, category) whose totals differ, with its drill-down.

    The key lists cover the whole (table, tenant, day, currency), every category: a key whose
    category differs between the sides is "different" there. They are empty when the
    partition was beyond the drill-down budget of the cycle.
    """

    table: str
    tenant_id: int
    local_date: date
    currency: str
    category: str
    postgres: Totals
    lake: Totals
    missing_keys: tuple[str, ...]
    extra_keys: tuple[str, ...]
    different_keys: tuple[str, ...]
    samples: tuple[dict[str, object], ...]

    def to_json(self) -> dict[str, object]:
        return {
            "table": self.table,
            "tenant_id": self.tenant_id,
            "local_date": self.local_date.isoformat(),
            "currency": self.currency,
            "category": self.category,
            "postgres": _totals_json(self.postgres),
            "lake": _totals_json(self.lake),
            "missing_keys": list(self.missing_keys),
            "extra_keys": list(self.extra_keys),
            "different_keys": list(self.different_keys),
            "samples": list(self.samples),
        }


@dataclass(frozen=True)
class IdentityViolation:
    """A lake row (or payout) that breaks one of Stripe's own identities."""

    identity: str
    table: str
    key: str
    tenant_id: int
    detail: str

    def to_json(self) -> dict[str, object]:
        return {
            "identity": self.identity,
            "table": self.table,
            "key": self.key,
            "tenant_id": self.tenant_id,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Comparison:
    """One compared group; the results table has one row per (table, tenant, day, currency)."""

    table: str
    tenant_id: int
    local_date: date
    currency: str
    category: str
    postgres: Totals
    lake: Totals


@dataclass(frozen=True)
class ReconciliationReport:
    run_id: str
    status: Status
    reason: str
    #: W0, the lake's replication watermark the comparison is pinned to, and S, the WAL
    #: position of the Postgres snapshot, as text LSNs ("" when not read).
    watermark: str
    postgres_lsn: str
    partitions_checked: int
    rows_compared: int
    keys_in_flight: int
    mismatches: tuple[Mismatch, ...]
    identity_violations: tuple[IdentityViolation, ...]
    #: Pre-rounding remainder per table, minor units summed over the compared Postgres rows.
    rounding_delta: dict[str, float]
    #: (table, tenant, day) holding keys that were in flight: checked again next cycle.
    deferred: frozenset[tuple[str, int, date]]
    postgres_seconds: float
    lake_seconds: float
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: Every compared group (``GROUPS`` columns), kept in Arrow: a full cycle compares about a
    #: million of them, and only the mismatching ones become Python objects.
    groups: pa.Table = field(default_factory=GROUPS.empty_table)
    #: (table, tenant, day) of every compared partition (also those with no rows).
    checked: frozenset[tuple[str, int, date]] = frozenset()

    @property
    def comparisons(self) -> tuple[Comparison, ...]:
        """Every compared group as objects (built on demand from ``groups``)."""
        return tuple(
            Comparison(
                r["table_name"], r["tenant_id"], r["local_date"], r["currency"], r["category"],
                Totals(r["pg_rows"], r["pg_amount"], r["pg_fee"], r["pg_net"]),
                Totals(r["lake_rows"], r["lake_amount"], r["lake_fee"], r["lake_net"]),
            )
            for r in self.groups.to_pylist()
        )  # fmt: skip

    def mismatched_partitions(self) -> frozenset[tuple[str, int, date]]:
        return frozenset((m.table, m.tenant_id, m.local_date) for m in self.mismatches)

    def results_table(self) -> pa.Table:
        """Rows of ``RECONCILIATION_RESULTS``: one per compared (tenant, day, currency, table).

        Summed over categories from ``groups`` in Arrow; only the mismatches' keys are Python.
        """
        by = ["table_name", "tenant_id", "local_date", "currency"]
        money = [f"{side}_{slot}" for slot in ("rows", "amount", "fee", "net") for side in SIDES]
        summed = self.groups.group_by(by, use_threads=False).aggregate([(c, "sum") for c in money])
        summed = summed.rename_columns([*by, *money])
        keys: dict[tuple[str, int, date, str], list[str]] = {}
        for m in self.mismatches:
            listed = keys.setdefault((m.table, m.tenant_id, m.local_date, m.currency), [])
            for k in (*m.missing_keys, *m.extra_keys, *m.different_keys):
                if k not in listed:
                    listed.append(k)
        failed = pa.table(
            {
                "table_name": pa.array([k[0] for k in keys], pa.string()),
                "tenant_id": pa.array([k[1] for k in keys], pa.int32()),
                "local_date": pa.array([k[2] for k in keys], pa.date32()),
                "currency": pa.array([k[3] for k in keys], pa.string()),
                "status": pa.array(["mismatch"] * len(keys), pa.string()),
                "differing_keys": pa.array(
                    [",".join(v[:RESULT_KEYS]) or None for v in keys.values()], pa.string()
                ),
            }
        )
        joined = summed.join(failed, by, join_type="left outer", use_threads=False)
        joined = joined.sort_by([(c, "ascending") for c in by])
        rows = joined.num_rows
        columns = {name: joined.column(name) for name in (*by, *money, "differing_keys")}
        columns["status"] = pc.fill_null(joined.column("status"), "match")
        columns["check_run_id"] = pa.repeat(pa.scalar(self.run_id), rows)
        columns["checked_at"] = pa.repeat(pa.scalar(self.checked_at), rows)
        columns["watermark_lsn"] = pa.repeat(pa.scalar(self.watermark), rows)
        return pa.table(
            [columns[f.name].cast(f.type) for f in RECONCILIATION_RESULTS],
            schema=RECONCILIATION_RESULTS,
        )

    def to_metadata(self) -> dict[str, object]:
        """A JSON-safe summary with the drill-down, for Dagster metadata and alerts."""
        return {
            "run_id": self.run_id,
            "status": self.status,
            "reason": self.reason,
            "checked_at": self.checked_at.isoformat(),
            "watermark_lsn": self.watermark,
            "postgres_lsn": self.postgres_lsn,
            "partitions_checked": self.partitions_checked,
            "rows_compared": self.rows_compared,
            "keys_in_flight": self.keys_in_flight,
            "mismatch_count": len(self.mismatches),
            "mismatches": [m.to_json() for m in self.mismatches[:METADATA_MISMATCHES]],
            "identity_violation_count": len(self.identity_violations),
            "identity_violations": [
                v.to_json() for v in self.identity_violations[:METADATA_VIOLATIONS]
            ],
            "rounding_delta": dict(self.rounding_delta),
            "deferred_count": len(self.deferred),
            "deferred": [list(p) for p in partition_json(sorted(self.deferred)[:100])],
            "postgres_seconds": round(self.postgres_seconds, 3),
            "lake_seconds": round(self.lake_seconds, 3),
        }


def partition_json(parts: Iterable[tuple[str, int, date]]) -> list[tuple[str, int, str]]:
    return [(t, tenant, day.isoformat()) for t, tenant, day in parts]


def _totals_json(t: Totals) -> dict[str, int]:
    return {"rows": t.rows, "amount": t.amount, "fee": t.fee, "net": t.net}


def json_safe(value: object) -> object:
    """A value of a sample row as JSON (instants and days as ISO text, decimals as text)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    return value
