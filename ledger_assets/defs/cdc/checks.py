"""Slot health: the replication slot as an asset, checked every five minutes.

A lost or missing slot stops CDC outright (error severity: the lake can no longer be kept
exact and needs a re-snapshot). Lag is a warning: WAL retained for the slot grows on the
Postgres disk, and the lake falls behind.
"""

import dagster as dg

from ledger_assets.defs.resources import LakeResource, PostgresResource
from ledger_assets.lib.cdc import capture_health

REPLICATION_SLOT = dg.AssetSpec(
    ["cdc", "replication_slot"],
    description="The logical replication slot feeding the lake's change log (pgoutput).",
    group_name="lake",
    kinds={"postgres"},
)

#: Retained WAL above this is a warning: at 2 cores a slot this far behind takes minutes to
#: drain, and the Postgres disk holds it until then.
MAX_RETAINED_WAL_BYTES = 2 << 30
#: No batch confirmed for this long while the sensor should run every 10 s.
MAX_SECONDS_SINCE_LANDED = 15 * 60


@dg.asset_check(asset=REPLICATION_SLOT.key, name="slot_is_healthy", blocking=False)
def slot_is_healthy(postgres: PostgresResource, lake: LakeResource) -> dg.AssetCheckResult:
    health = capture_health(lake.capture_config(postgres.dsn))
    slot = health.slot
    metadata: dict[str, dg.RawMetadataValue] = {
        "slot": lake.slot_name,
        "wal_status": None if slot is None else slot.wal_status,
        "active": None if slot is None else slot.active,
        "retained_wal_bytes": None if slot is None else slot.retained_wal_bytes,
        "lag_bytes": None if slot is None else slot.lag_bytes,
        "landed_lsn": None if health.landed_lsn is None else str(health.landed_lsn),
        "seconds_since_landed": health.seconds_since_landed,
    }
    if health.problems:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(health.problems) + ": re-snapshot the lake (ARCHITECTURE §6)",
            metadata=metadata,
        )
    warnings = []
    if slot is not None and (slot.retained_wal_bytes or 0) > MAX_RETAINED_WAL_BYTES:
        warnings.append(f"slot retains {slot.retained_wal_bytes:,} bytes of WAL")
    since = health.seconds_since_landed
    if since is not None and since > MAX_SECONDS_SINCE_LANDED:
        warnings.append(f"no batch confirmed for {since:,.0f} s")
    return dg.AssetCheckResult(
        passed=not warnings,
        severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(warnings) or "slot healthy",
        metadata=metadata,
    )


slot_health_job = dg.define_asset_job(
    "slot_health_job",
    selection=dg.AssetSelection.checks(slot_is_healthy),
    executor_def=dg.in_process_executor,
    description="Check the CDC slot's health.",
)

slot_health_schedule = dg.ScheduleDefinition(
    name="slot_health_schedule",
    description="Check the CDC slot's health every five minutes.",
    job=slot_health_job,
    cron_schedule="*/5 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
