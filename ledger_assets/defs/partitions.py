"""Partition definitions shared by the lake, the marts and the checks."""

import dagster as dg

#: The first account-local day the lake holds. Older facts (a dispute on a charge from before
#: this date) are reported, not dropped.
LAKE_START_DATE = "2023-01-01"

daily_partitions = dg.DailyPartitionsDefinition(start_date=LAKE_START_DATE, end_offset=1)

#: Tenants as a dynamic dimension, registered by ``tenant_registry_sensor``.
tenant_partitions = dg.DynamicPartitionsDefinition(name="tenants")
