"""Write validated Stripe rows: parents first, orphans quarantined, waiting records retried.

A refund or dispute names its charge. When the charge is not in the system of record (yet),
the record is quarantined with ``awaiting_key`` = the charge id instead of failing the batch;
when that charge is written later, the waiting records are validated and written again and
their quarantine rows resolved — all in the caller's transaction.

A written dispute also marks its charge ``disputed`` in the same transaction, as Stripe does:
Stripe emits no charge event for it, and the charge's cohort facts (its tenant and local day in
the lake) must change together with the dispute.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from ledger_assets.lib.ingest.quarantine import Rejection, quarantine, resolve, waiting_on
from ledger_assets.lib.ingest.stripe_records import StripeRows, validate_objects
from ledger_assets.lib.ingest.tables import (
    STRIPE_BALANCE_TRANSACTIONS,
    STRIPE_CHARGES,
    STRIPE_DISPUTES,
    STRIPE_PAYOUTS,
    STRIPE_REFUNDS,
    IngestTable,
)
from ledger_assets.lib.ingest.upsert import MergeCounts, merge_rows

#: Parents before children, so foreign keys hold within one transaction.
WRITE_ORDER: tuple[IngestTable, ...] = (
    STRIPE_CHARGES,
    STRIPE_BALANCE_TRANSACTIONS,
    STRIPE_PAYOUTS,
    STRIPE_REFUNDS,
    STRIPE_DISPUTES,
)
#: Tables whose rows need their charge to exist; the charge id is the row's third column.
_CHILDREN_OF_CHARGES = {STRIPE_REFUNDS.name, STRIPE_DISPUTES.name}
_CHARGE_COLUMN = 2
#: Added to a quarantined object so a retry keeps the snapshot's own age.
SNAPSHOT_TIME_KEY = "_ledger_source_ts"


def _iso(value: object) -> str:
    assert isinstance(value, datetime)
    return value.isoformat()


@dataclass
class WriteReport:
    merged: dict[str, MergeCounts] = field(default_factory=dict)
    quarantined: int = 0
    #: Records that had waited in quarantine for their parent and are now written.
    released: int = 0

    @property
    def written(self) -> int:
        return sum(c.inserted + c.updated for c in self.merged.values())

    def absorb(self, other: WriteReport) -> None:
        for table, counts in other.merged.items():
            self.merged[table] = self.merged.get(table, MergeCounts()) + counts
        self.quarantined += other.quarantined
        self.released += other.released


def _existing_charges(
    conn: psycopg.Connection[tuple[object, ...]], tenant_id: int, ids: Iterable[str]
) -> set[str]:
    rows = conn.execute(
        "select id from ledger.stripe_charges where tenant_id = %s and id = any(%s)",
        (tenant_id, list(set(ids))),
    ).fetchall()
    return {str(r[0]) for r in rows}


def write_stripe_rows(
    conn: psycopg.Connection[tuple[object, ...]],
    batch: StripeRows,
    tenant_id: int,
    payloads: Mapping[str, Mapping[str, Any]],
) -> WriteReport:
    """Merge ``batch`` into the system of record inside the caller's transaction.

    Args:
        conn: a connection inside a transaction.
        batch: validated rows and rejections (all of one tenant).
        tenant_id: the tenant the rows belong to.
        payloads: the raw objects by id; an orphan's object is kept in quarantine, stamped
            with its snapshot time, so that it can be validated and written again later.
    """
    report = WriteReport(quarantined=quarantine(conn, batch.rejected))
    charge_ids: set[str] = set()
    for table in WRITE_ORDER:
        rows = batch.rows.get(table.name, [])
        if table.name in _CHILDREN_OF_CHARGES and rows:
            rows = _set_aside_orphans(conn, table, rows, tenant_id, payloads, report)
        if not rows:
            continue
        report.merged[table.name] = merge_rows(conn, table, rows)
        if table is STRIPE_DISPUTES:
            _mark_charges_disputed(conn, rows, tenant_id)
        if table is STRIPE_CHARGES and report.merged[table.name].inserted:
            # Only a charge new to the system of record can be a parent someone waits for.
            charge_ids.update(str(r[0]) for r in rows)
    if charge_ids:
        report.absorb(_release_waiting(conn, charge_ids, tenant_id))
    return report


def _mark_charges_disputed(
    conn: psycopg.Connection[tuple[object, ...]], disputes: list[tuple[object, ...]], tenant_id: int
) -> None:
    """Set ``disputed`` on the charges of ``disputes`` (rows of existing charges only).

    The charge's ``source_ts`` moves up to the dispute's snapshot time, so a charge snapshot
    taken before the dispute (a slow pull) cannot merge over it and clear the flag. A charge
    already marked is left alone: a re-delivered dispute writes nothing.
    """
    newest: dict[str, datetime] = {}
    for row in disputes:
        charge, source_ts = str(row[_CHARGE_COLUMN]), row[-1]
        assert isinstance(source_ts, datetime)
        newest[charge] = max(source_ts, newest.get(charge, source_ts))
    conn.execute(
        """
        update ledger.stripe_charges c
        set disputed = true, source_ts = greatest(c.source_ts, d.source_ts)
        from unnest(%s::text[], %s::timestamptz[]) as d(charge, source_ts)
        where c.tenant_id = %s and c.id = d.charge and not c.disputed
        """,
        (list(newest), list(newest.values()), tenant_id),
    )


def _set_aside_orphans(
    conn: psycopg.Connection[tuple[object, ...]],
    table: IngestTable,
    rows: list[tuple[object, ...]],
    tenant_id: int,
    payloads: Mapping[str, Mapping[str, Any]],
    report: WriteReport,
) -> list[tuple[object, ...]]:
    known = _existing_charges(conn, tenant_id, (str(r[_CHARGE_COLUMN]) for r in rows))
    kept: list[tuple[object, ...]] = []
    orphans: list[tuple[object, ...]] = []
    for row in rows:
        (kept if row[_CHARGE_COLUMN] in known else orphans).append(row)
    if orphans:
        entity = table.name.removeprefix("stripe_").removesuffix("s")
        report.quarantined += quarantine(
            conn,
            [
                Rejection(
                    "stripe", entity, str(row[0]),
                    f"unknown charge {row[_CHARGE_COLUMN]} for tenant {tenant_id}",
                    {**payloads[str(row[0])], SNAPSHOT_TIME_KEY: _iso(row[-1])}, tenant_id,
                    awaiting_key=str(row[_CHARGE_COLUMN]),
                )
                for row in orphans
            ],
        )  # fmt: skip
    return kept


def _release_waiting(
    conn: psycopg.Connection[tuple[object, ...]], charge_ids: set[str], tenant_id: int
) -> WriteReport:
    waiting = waiting_on(conn, charge_ids)
    if not waiting:
        return WriteReport()
    # The quarantined snapshot keeps its own age: a newer one may have arrived meanwhile.
    stamped: dict[datetime, list[dict[str, Any]]] = {}
    for _, _, payload in waiting:
        source_ts = datetime.fromisoformat(payload.pop(SNAPSHOT_TIME_KEY))
        stamped.setdefault(source_ts, []).append(payload)
    report = WriteReport()
    for source_ts, group in stamped.items():
        rows = validate_objects(group, tenant_id, source_ts)
        report.absorb(write_stripe_rows(conn, rows, tenant_id, {o["id"]: o for o in group}))
    resolve(conn, [q for q, _, _ in waiting], "parent arrived; written")
    report.released += len(waiting)
    return report
