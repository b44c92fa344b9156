"""The Dagster code location: every domain's definitions, assembled once."""

import dagster as dg

from ledger_assets.defs.resources import RESOURCES
from ledger_assets.defs.sor.assets import SYSTEM_OF_RECORD_TABLES
from ledger_assets.defs.sor.sensors import system_of_record_activity_sensor, tenant_registry_sensor

defs = dg.Definitions(
    assets=SYSTEM_OF_RECORD_TABLES,
    sensors=[tenant_registry_sensor, system_of_record_activity_sensor],
    resources=RESOURCES,
)
