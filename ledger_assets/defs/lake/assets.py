"""The lake tables: one partitioned asset per mirrored table (tenant × account-local day).

CDC keeps them current without launching a run per partition: ``lake_apply_job`` applies a
tick's change-log batches in one run and records a materialization for every partition whose
content changed (see ARCHITECTURE.md §5). Materializing a partition here — from the UI, a
backfill, or reconciliation's auto-heal — rebuilds it straight from Postgres.
"""

from datetime import date

import dagster as dg

from ledger_assets.defs.partitions import daily_partitions, tenant_partitions
from ledger_assets.defs.resources import LakeResource, PostgresResource
from ledger_assets.defs.sor.assets import sor_asset_key
from ledger_assets.lib.lake.repair import rebuild_partition
from ledger_assets.lib.lake.schema import load_lake_table
from ledger_assets.lib.sor.catalog import MIRRORED_TABLES, MirroredTable

LAKE_KEY_PREFIX = "lake"

lake_partitions = dg.MultiPartitionsDefinition(
    {"date": daily_partitions, "tenant": tenant_partitions}
)


def lake_asset_key(table: str) -> dg.AssetKey:
    return dg.AssetKey([LAKE_KEY_PREFIX, table])


def _lake_asset(spec: MirroredTable) -> dg.AssetsDefinition:
    @dg.asset(
        key=lake_asset_key(spec.name),
        deps=[sor_asset_key(spec.name)],
        partitions_def=lake_partitions,
        group_name="lake",
        kinds={"parquet", "duckdb"},
        pool="lake_writer",
        description=(
            f"Parquet copy of ledger.{spec.name}: one partition per tenant and account-local "
            f"day (from {spec.day_column}), kept current by CDC; materializing a partition "
            "rebuilds it from Postgres."
        ),
    )
    def lake_table(
        context: dg.AssetExecutionContext, postgres: PostgresResource, lake: LakeResource
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        partition = context.partition_key
        assert isinstance(partition, dg.MultiPartitionKey)
        keys = partition.keys_by_dimension
        day, tenant = date.fromisoformat(keys["date"]), int(keys["tenant"])
        with postgres.connect() as conn:
            written = rebuild_partition(conn, lake.layout, load_lake_table(conn, spec), tenant, day)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": written.rows,
                "content_sha256": written.content_sha256,
                "changed": written.changed,
                "source": "rebuilt from Postgres",
            }
        )

    return lake_table


LAKE_ASSETS = [_lake_asset(spec) for spec in MIRRORED_TABLES]
