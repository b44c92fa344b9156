"""``marts_at_scale``: the full build of every mart and test at issue 7's scale (200M lake rows).

Seeding 200M rows through Postgres would take the machine's disk and most of an hour, so the
workload seeds ``--rows`` (e.g. 20M over 1,000 tenants and 3 years), builds the lake, and runs
the marts asset's full build over it; then it makes the lake ``--lake-copies`` times denser
(:func:`densify_lake`: each row copied, its id and the ids it references suffixed per copy, so
every relationship still holds and every copy is unique) and runs the same full build over a
freshly prepared marts database. Same tenants, days and lake files, ``copies`` times the rows
per tenant-day.

Side by side in one run, at both sizes: the full build that publishes the marts (dbt's own
time, the process's CPU seconds), its seconds per million lake rows (1.0x: the cost grows
linearly), and the lake audit the marts asset runs after publishing (the staging models'
grain and reference tests over every lake row); the peak memory of dbt.
"""

from __future__ import annotations

import resource
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.core import Context, Figure, workload
from bench.workloads.marts import full_build_args, lake_audit_args, run_dbt, seeded_marts
from ledger_assets.lib.lake.layout import LakeLayout
from ledger_assets.lib.lake.schema import LakeTable
from ledger_assets.lib.lake.store import parquet_bytes
from ledger_assets.lib.marts.contracts import results_dir
from ledger_assets.lib.marts.prepare import prepare_marts_database

#: Per lake table, the columns holding an object's own id or another object's: the copies'
#: suffix goes on all of them, so a copied refund points at the copied charge.
ID_COLUMNS = {
    "stripe_balance_transactions": ("id", "source", "payout"),
    "stripe_charges": ("id", "balance_transaction"),
    "stripe_refunds": ("id", "charge", "balance_transaction", "failure_balance_transaction"),
    "stripe_disputes": ("id", "charge"),
    "stripe_payouts": ("id", "balance_transaction", "failure_balance_transaction"),
    "plaid_transactions": ("transaction_id", "pending_transaction_id"),
}


def _copies_of(rows: pa.Table, table: str, copies: int) -> pa.Table:
    """``rows`` and ``copies - 1`` copies of them, ids suffixed ``_c<k>``, tenant by tenant."""
    parts = [rows]
    for k in range(1, copies):
        copy = rows
        for column in ID_COLUMNS[table]:
            if column in copy.column_names:
                at = copy.schema.get_field_index(column)
                suffixed = pc.binary_join_element_wise(copy.column(column), f"_c{k}", "")
                copy = copy.set_column(at, copy.schema.field(at), suffixed)
        parts.append(copy)
    return pa.concat_tables(parts).sort_by("tenant_id")


def densify_lake(layout: LakeLayout, tables: Mapping[str, LakeTable], copies: int) -> int:
    """Rewrite every base and overlay file of a local lake with ``copies`` copies of its rows,
    in the lake's own file format; returns the lake's rows afterwards."""

    def rewrite(table: str, path: Path) -> int:
        dense = _copies_of(pq.read_table(path), table, copies)
        path.write_bytes(parquet_bytes(dense))
        return int(dense.num_rows)

    files = [
        (table, Path(p.uri))
        for table in tables
        for p in [*layout.base_files(table), *layout.overlay_files(table)]
    ]
    # pyarrow releases the GIL while it decodes, compresses and writes.
    with ThreadPoolExecutor(max_workers=2) as pool:
        return sum(pool.map(lambda tp: rewrite(*tp), files))


def _peak_child_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 / 1024


@workload("marts_at_scale")
def marts_at_scale(ctx: Context) -> list[Figure]:
    copies = ctx.options.lake_copies
    with seeded_marts(ctx, "marts_at_scale") as seeded:
        bench = seeded.bench
        run_dbt(bench.project, bench.state, "parse")
        _, small_own, small_cpu = run_dbt(bench.project, bench.state, *full_build_args())
        _, small_audit, _ = run_dbt(bench.project, bench.state, *lake_audit_args())
        small_rows = seeded.lake_rows

        dense_rows = densify_lake(bench.layout, bench.tables, copies)
        dense_state = bench.state.parent / "state_dense"
        prepare_marts_database(
            dense_state / "marts.duckdb", bench.layout, bench.tables, seeded.dsn,
            results_dir(dense_state),
        )  # fmt: skip
        wall, own, cpu = run_dbt(bench.project, dense_state, *full_build_args())
        _, audit, audit_cpu = run_dbt(bench.project, dense_state, *lake_audit_args())
        peak = _peak_child_rss_gb()

    def per_million(seconds: float, rows: int) -> float:
        return seconds / (rows / 1e6)

    millions = f"{dense_rows / 1e6:.0f}M"
    return [
        Figure(f"lake rows, dense ({copies} copies) vs seeded", dense_rows, "rows", small_rows),
        Figure(f"full build at {millions}, marts published (wall)", wall, "s", None, False),
        Figure(f"full build at {millions} (dbt) vs seeded", own, "s", small_own, False),
        Figure(f"full build at {millions} (CPU) vs seeded", cpu, "s", small_cpu, False),
        Figure(
            "full build: dbt s per million lake rows, dense vs seeded",
            per_million(own, dense_rows),
            "s",
            per_million(small_own, small_rows),
            False,
        ),
        Figure(f"lake audit at {millions} (dbt) vs seeded", audit, "s", small_audit, False),
        Figure(f"lake audit at {millions} (CPU)", audit_cpu, "s", None, False),
        Figure(f"build + audit at {millions}: peak memory of dbt", peak, "GB", None, False),
    ]
