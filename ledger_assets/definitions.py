"""The Dagster code location: every domain's definitions, assembled once."""

import dagster as dg

from ledger_assets.defs.cdc.checks import (
    REPLICATION_SLOT,
    slot_health_job,
    slot_health_schedule,
    slot_is_healthy,
)
from ledger_assets.defs.cdc.sensors import cdc_capture_sensor, lake_seed_sensor
from ledger_assets.defs.dbt.assets import ledger_marts
from ledger_assets.defs.dbt.reproduce import reproduce_marts_job
from ledger_assets.defs.dbt.resources import DBT_RESOURCES
from ledger_assets.defs.dbt.schedules import marts_job, marts_schedule
from ledger_assets.defs.disputes.sensors import late_arrivals_sensor
from ledger_assets.defs.lake.assets import LAKE_ASSETS
from ledger_assets.defs.lake.jobs import (
    lake_apply_job,
    lake_compaction_job,
    lake_compaction_schedule,
    lake_seed_job,
)
from ledger_assets.defs.plaid.assets import plaid_ingestion
from ledger_assets.defs.plaid.sensors import (
    plaid_sync_job,
    plaid_sync_schedule,
    plaid_webhook_sensor,
)
from ledger_assets.defs.reconciliation.alerts import reconciliation_alert_sensor
from ledger_assets.defs.reconciliation.checks import (
    reconcile_lake_with_postgres,
    reconciliation_full_schedule,
    reconciliation_job,
    reconciliation_schedule,
)
from ledger_assets.defs.reconciliation.resources import RECONCILIATION_RESOURCES
from ledger_assets.defs.resources import RESOURCES
from ledger_assets.defs.sor.sensors import system_of_record_activity_sensor, tenant_registry_sensor
from ledger_assets.defs.stripe.assets import stripe_ingestion
from ledger_assets.defs.stripe.sensors import (
    stripe_ingestion_job,
    stripe_pull_schedule,
    stripe_webhook_sensor,
)

defs = dg.Definitions(
    assets=[stripe_ingestion, plaid_ingestion, *LAKE_ASSETS, REPLICATION_SLOT, ledger_marts],
    asset_checks=[slot_is_healthy, reconcile_lake_with_postgres],
    jobs=[
        stripe_ingestion_job,
        plaid_sync_job,
        lake_seed_job,
        lake_apply_job,
        lake_compaction_job,
        slot_health_job,
        marts_job,
        reproduce_marts_job,
        reconciliation_job,
    ],
    schedules=[
        stripe_pull_schedule,
        plaid_sync_schedule,
        lake_compaction_schedule,
        slot_health_schedule,
        marts_schedule,
        reconciliation_schedule,
        reconciliation_full_schedule,
    ],
    sensors=[
        tenant_registry_sensor,
        system_of_record_activity_sensor,
        stripe_webhook_sensor,
        plaid_webhook_sensor,
        lake_seed_sensor,
        cdc_capture_sensor,
        reconciliation_alert_sensor,
        late_arrivals_sensor,
    ],
    resources={**RESOURCES, **DBT_RESOURCES, **RECONCILIATION_RESOURCES},
)
