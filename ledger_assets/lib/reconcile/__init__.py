"""Reconciliation to the cent: the lake against Postgres, pinned to the replication watermark.

Per mirrored table and per (tenant, account-local day, currency, category) a cycle computes the
row count and three integer money slots (``specs.py``) twice: in Postgres, the truth, with SQL
aggregation (local day = ``(created at time zone tenant.time_zone)::date``; Plaid's ``date``),
and in DuckDB over the lake (``create_lake_view``; the lake stores ``local_date``). Totals must
be equal exactly. A mismatch is drilled down to the keys missing from, extra in (duplicates
included) and different in the lake, with sample rows; Stripe's identities are checked on the
lake; the results land as rows of ``marts.contracts.RECONCILIATION_RESULTS``.

Pinning: no false alarm from changes in flight
----------------------------------------------
Postgres and the lake are never read at the same instant, and CDC moves the lake while a cycle
runs. A cycle therefore compares only keys that no change touched in the window it might
straddle, and proves that the rest must be identical:

1. **W0** = the lake's watermark (``applied_end``) before anything is read. Every change with
   a commit position up to W0 is in every lake file from now on. (A seeding lake is not judged:
   ``skipped``.)
2. **Postgres snapshot.** One read-only REPEATABLE READ transaction whose first statement reads
   **S** = ``pg_current_wal_lsn()``. The snapshot is taken as that statement starts, so every
   commit it sees has its commit record before S. All Postgres reads of the cycle (totals,
   in-flight rows, drill-down rows) use this one snapshot.
3. **Change log up to S.** The cycle captures (``ChangeCapture.capture_batch``) until the
   change log holds every published commit before S: a landed batch ends past S, or a read
   found nothing to land while the flushed WAL was already past S. If another process holds
   the capture lock, the cycle waits for the landed position to pass S, retrying the lock;
   after ``capture_timeout`` the cycle reports ``deferred``, never ``mismatch``.
4. **Lake, table by table, under the table's writer lock** (``lake.compact.table_lock``, the
   lock apply, compaction and repair take). While it is held the table's files cannot change,
   and everything in them was landed before the lock was taken: apply only writes landed
   batches. So the change log read *under the lock* (every batch after W0: its end **B** is at
   least S and at least every change the files can hold) names every key whose image may
   differ. These **in-flight keys** (new and old primary keys, wherever their rows live) are
   excluded from the lake's totals in the same query (an anti-join), and subtracted from the
   Postgres totals by aggregating the same keys' rows in the snapshot.
5. **Why the rest must be equal.** A key with no change in (W0, B] has, in the lake, the image
   of its last change up to W0 (the files hold all of those, and nothing later for it), and in
   the snapshot the image of its last visible change, which is also at or before W0 (a visible
   commit is before S <= B). Those are the same change, provided every change applied by W0 is
   visible to a snapshot taken afterwards: true because a commit becomes visible microseconds
   after its record is written, while capture, landing, apply and the watermark write take
   milliseconds at least. So any remaining difference is a real one.
6. The in-flight keys' partitions (old and new rows, as ``lake.apply.touched_partitions``
   computes them) are returned as ``deferred``; the next incremental cycle compares them.

Costs of the lock: apply waits for at most one table's comparison, the longer of its lake and
Postgres aggregations (they run at the same time: a worker thread runs the table's aggregate
on the snapshot connection, started before the lock is requested, while DuckDB reads the
files) plus the in-memory join. Identities take the payouts and balance-transaction locks
together (sorted; no other writer holds two).

Scope and cost
--------------
Both sides aggregate in their own engine; the Postgres groups come over as CSV through
``COPY ... TO STDOUT`` into Arrow, and one full outer join per table in DuckDB yields every
group's two totals: only the mismatching groups become Python objects, and the report keeps
every group as an Arrow table (``ReconciliationReport.groups``). A lake view lists and opens
only the files of the days a cycle compares (``create_lake_view(days=...)``).

``full`` compares every partition (a full scan of each table on both sides). ``incremental``
compares the partitions touched by batches between the last cycle's W0 and this one's, the
partitions of lake files changed since the last cycle by anything else (``lake.drift``: an
edited, truncated or deleted Parquet file changes no change-log entry), last
cycle's deferred and failed partitions, and a rolling sweep of ``ceil(days / sweep_cycles)``
days for every tenant (the sweep cursor and the watermark live in
``<state dir>/reconciliation/incremental.json``; 96 cycles, one day of 15-minute cycles, by
default). In Postgres a restricted cycle joins per-tenant UTC windows (consecutive days merged)
against the ``(tenant_id, created)`` / ``(tenant_id, date)`` indexes: rows read per cycle are
the rows of the compared partitions, about ``rows / sweep_cycles`` plus the touched days
(refunds, disputes and payouts got their indexes in migration 0004; a window is read by one
index range). A payout's balance transactions lie on any earlier day: the payout identity
reads the lake files of the days the snapshot puts them on (found by the ``payout`` index).
"""

from ledger_assets.lib.reconcile.engine import reconcile
from ledger_assets.lib.reconcile.report import (
    Comparison,
    IdentityViolation,
    Mismatch,
    ReconcileScope,
    ReconciliationReport,
    Totals,
)
from ledger_assets.lib.reconcile.specs import SPECS, MeasureSpec

__all__ = [
    "SPECS",
    "Comparison",
    "IdentityViolation",
    "MeasureSpec",
    "Mismatch",
    "ReconcileScope",
    "ReconciliationReport",
    "Totals",
    "reconcile",
]
