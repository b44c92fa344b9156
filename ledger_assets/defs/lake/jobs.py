"""Runs that write the lake: seed it, apply CDC batches, compact old overlays."""

import time
from datetime import date, timedelta

import dagster as dg

from ledger_assets.defs.lake.assets import lake_asset_key
from ledger_assets.defs.partitions import LAKE_START_DATE, tenant_partitions
from ledger_assets.defs.reconciliation.resources import ReconciliationResource
from ledger_assets.defs.resources import LakeResource, PostgresResource
from ledger_assets.defs.runs import PRIORITY_TAG
from ledger_assets.lib.cdc import ChangeCapture, reset_capture
from ledger_assets.lib.cdc.changelog import prunable_end, prune_batches
from ledger_assets.lib.cdc.lsn import Lsn
from ledger_assets.lib.cdc.state import read_state
from ledger_assets.lib.lake.compact import compact
from ledger_assets.lib.lake.lineage import dispute_changes, rewrite_lineage
from ledger_assets.lib.lake.sync import apply_landed, lake_tables, read_lake_state, seed_lake
from ledger_assets.lib.lake.versions import RETENTION_DAYS, prune_versions
from ledger_assets.lib.reconcile.state import read_incremental_state

#: Lake runs go ahead of queued ingestion runs: they are what makes changes visible.
LAKE_PRIORITY = {PRIORITY_TAG: "5"}

#: Days still receiving changes keep their overlays; older ones are folded into day files.
HOT_WINDOW_DAYS = 3
#: Change-log batches are kept a week after landing even once applied (audits, re-checks).
CHANGELOG_RETENTION_S = 7 * 86_400
_FIRST_DAY = date.fromisoformat(LAKE_START_DATE)
#: Metadata keys of a lake materialization that the late-arrivals sensor reads.
DISPUTES_KEY = "ledger/disputes"
LSN_FROM_KEY = "source_lsn_from"
LSN_TO_KEY = "source_lsn_to"


def _register_tenants(context: dg.OpExecutionContext, tenants: set[int]) -> None:
    assert tenant_partitions.name is not None
    known = set(context.instance.get_dynamic_partitions(tenant_partitions.name))
    new = sorted({str(t) for t in tenants} - known, key=int)
    if new:
        context.instance.add_dynamic_partitions(tenant_partitions.name, new)


@dg.op(pool="lake_writer")
def seed_lake_from_postgres(
    context: dg.OpExecutionContext, postgres: PostgresResource, lake: LakeResource
) -> None:
    """Create the CDC slot (first, so nothing is missed), then snapshot every mirrored table."""
    config = lake.capture_config(postgres.dsn)
    if read_state(config.changelog_dir) is None:
        # No change log: a slot left from an older lake cannot be continued (re-snapshot path).
        retired = reset_capture(config)
        if retired:
            context.log.warning(f"retired an old change log to {retired}")
    with ChangeCapture(config) as capture:
        state = capture.start()
    reports = seed_lake(postgres.dsn, lake.layout, state.origin)
    for report in reports:
        context.log.info(
            f"seeded lake/{report.table}: {report.rows} rows in {report.days} day files "
            f"({report.seconds:.1f} s), consistent once CDC passes {report.consistent_lsn}"
        )


@dg.op(pool="lake_writer")
def apply_change_log(
    context: dg.OpExecutionContext, postgres: PostgresResource, lake: LakeResource
) -> None:
    """Apply landed change-log batches; record a materialization per changed partition."""
    result = apply_landed(postgres.dsn, lake.layout, lake.changelog_dir)
    if not result.batches:
        context.log.info("nothing to apply: the lake is at the change log's end")
        return
    assert result.start is not None
    assert result.end is not None
    changed = [w for writes in result.writes.values() for w in writes if w.changed]
    _register_tenants(context, {w.key.tenant_id for w in changed})
    disputes = dispute_changes(lake.changelog_dir, result.start, result.end)
    outside: dict[str, list[str]] = {}
    for write in changed:
        lineage = rewrite_lineage(
            lake.layout, result.tables[write.key.table], write, result.start, disputes
        )
        if write.key.local_date < _FIRST_DAY or write.key.local_date > date.today() + timedelta(1):
            # Kept in the lake, but Dagster has no such partition: reported, never dropped.
            outside.setdefault(write.key.table, []).append(
                f"tenant {write.key.tenant_id} day {write.key.local_date}"
                + (f" (dispute {', '.join(lineage.disputes)})" if lineage.disputes else "")
            )
            continue
        metadata: dict[str, dg.RawMetadataValue] = {
            "dagster/row_count": write.rows,
            "source_lsn": str(result.end),
            # The commits this rewrite brings in; a rewrite that only removed rows has none,
            # and then the applied range bounds it.
            LSN_FROM_KEY: str(lineage.lsn_from or Lsn(result.start + 1)),
            LSN_TO_KEY: str(lineage.lsn_to or result.end),
            DISPUTES_KEY: ",".join(lineage.disputes),
            "content_sha256": write.content_sha256,
            "source": "cdc",
        }
        context.log_event(
            dg.AssetMaterialization(
                asset_key=lake_asset_key(write.key.table),
                partition=write.key.dagster_key,
                metadata=metadata,
            )
        )
    for table, partitions in outside.items():
        # Kept in the lake; Dagster has no such partition, so the table records it instead.
        context.log.warning(
            f"lake/{table}: {len(partitions)} partition(s) rewritten outside the Dagster "
            f"partition range (from {LAKE_START_DATE}): {'; '.join(partitions)}"
        )
        context.log_event(
            dg.AssetObservation(
                asset_key=lake_asset_key(table),
                description="Partitions rewritten outside the Dagster partition range: kept "
                "in the lake, reported here",
                metadata={
                    "ledger/outside_partition_range": dg.MetadataValue.md(
                        "\n".join(f"- {p}" for p in partitions)
                    ),
                    "source_lsn": str(result.end),
                },
            )
        )
    context.log.info(
        f"applied {result.batches} batch(es), {result.changes} changes, "
        f"{result.start}..{result.end}: {len(changed)} partition(s) rewritten"
        + (f", {sum(map(len, outside.values()))} outside the partition range" if outside else "")
        + (f"; disputes {sorted({d.dispute_id for d in disputes})}" if disputes else "")
    )


@dg.op(pool="lake_writer")
def compact_lake(
    context: dg.OpExecutionContext,
    postgres: PostgresResource,
    lake: LakeResource,
    reconciliation: ReconciliationResource,
) -> None:
    """Fold overlays older than the hot window into their day files; prune old versions and
    change-log batches every reader has passed."""
    before = date.today() - timedelta(days=HOT_WINDOW_DAYS)
    with postgres.connect() as conn:
        tables = lake_tables(conn)
    for lake_table in tables.values():
        report = compact(lake.layout, lake_table, before)
        context.log.info(
            f"compacted lake/{report.table}: {report.overlays_folded} overlays into "
            f"{report.days} day files"
        )
        pruned = prune_versions(lake.layout, lake_table.name)
        context.log.info(
            f"lake/{pruned.table} versions: pruned {pruned.files} ({pruned.bytes} bytes) older "
            f"than {RETENTION_DAYS} days; kept {pruned.kept_files} ({pruned.kept_bytes} bytes)"
        )
    # The change log's readers: the lake (its watermark) and reconciliation's incremental cycle
    # (the batches since its last watermark name the partitions it must compare).
    recon = read_incremental_state(reconciliation.root)
    readers = [
        read_lake_state(lake.layout).applied_end,
        Lsn.parse(recon.last_watermark) if recon and recon.last_watermark else None,
    ]
    upto = prunable_end(lake.changelog_dir, readers, CHANGELOG_RETENTION_S, time.time())
    if upto is not None:
        log_pruned = prune_batches(lake.changelog_dir, upto)
        context.log.info(
            f"change log pruned through {upto}: {log_pruned.batches} batches, "
            f"{log_pruned.files} files, {log_pruned.bytes} bytes"
        )


@dg.job(
    executor_def=dg.in_process_executor,
    tags=LAKE_PRIORITY,
    description="Create the CDC slot, then snapshot every mirrored table into the lake.",
)
def lake_seed_job() -> None:
    seed_lake_from_postgres()


@dg.job(
    executor_def=dg.in_process_executor,
    tags=LAKE_PRIORITY,
    description="Apply landed CDC batches to the lake (one run per capture tick).",
)
def lake_apply_job() -> None:
    apply_change_log()


@dg.job(
    executor_def=dg.in_process_executor,
    tags=LAKE_PRIORITY,
    description="Fold old overlay files into day files (scan speed; no content change) and "
    "prune partition versions past their retention.",
)
def lake_compaction_job() -> None:
    compact_lake()


lake_compaction_schedule = dg.ScheduleDefinition(
    name="lake_compaction_schedule",
    description="Nightly compaction of lake overlays outside the hot window.",
    job=lake_compaction_job,
    cron_schedule="30 2 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
