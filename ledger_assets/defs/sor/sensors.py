"""Sensors that mirror facts about the system of record into Dagster."""

import json

import dagster as dg

from ledger_assets.defs.partitions import tenant_partitions
from ledger_assets.defs.resources import PostgresResource
from ledger_assets.defs.sor.assets import sor_asset_key
from ledger_assets.lib.sor.catalog import table_activity, tenant_ids


@dg.sensor(
    name="tenant_registry_sensor",
    description="Register every tenant in the system of record as a 'tenants' partition.",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def tenant_registry_sensor(
    context: dg.SensorEvaluationContext, postgres: PostgresResource
) -> dg.SensorResult | dg.SkipReason:
    assert tenant_partitions.name is not None
    with postgres.connect() as conn:
        wanted = {str(t) for t in tenant_ids(conn)}
    known = set(context.instance.get_dynamic_partitions(tenant_partitions.name))
    new = sorted(wanted - known, key=int)
    if not new:
        return dg.SkipReason(f"all {len(wanted)} tenants are registered")
    context.log.info("registering %d new tenant partitions", len(new))
    return dg.SensorResult(dynamic_partitions_requests=[tenant_partitions.build_add_request(new)])


@dg.sensor(
    name="system_of_record_activity_sensor",
    description="Observe each system-of-record table when its write counter moves.",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def system_of_record_activity_sensor(
    context: dg.SensorEvaluationContext, postgres: PostgresResource
) -> dg.SensorResult | dg.SkipReason:
    # The cursor maps table -> last observed write counter, so a quiet table records nothing.
    seen: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
    with postgres.connect() as conn:
        activity = table_activity(conn)
    changed = [a for a in activity if seen.get(a.table) != a.writes]
    if not changed:
        return dg.SkipReason("no system-of-record table was written since the last tick")
    observations = [
        dg.AssetObservation(
            asset_key=sor_asset_key(a.table),
            metadata={"row_estimate": a.row_estimate, "writes": a.writes},
        )
        for a in changed
    ]
    cursor = json.dumps({**seen, **{a.table: a.writes for a in changed}}, sort_keys=True)
    return dg.SensorResult(asset_events=observations, cursor=cursor)
