"""A code location for ``bench partitions``: one lake table under three partition designs.

Loaded by a real ``dagster-webserver`` in that workload, so the UI's own GraphQL queries are
timed against the same instance, events and tenants for each design:

* ``day_x_tenant``: the lake's design (``defs/lake/assets.py``): daily dates x dynamic tenants;
* ``month_x_tenant``: monthly dates x the same tenants;
* ``day_only``: daily dates; tenants only inside the files.
"""

import dagster as dg

from ledger_assets.defs.partitions import LAKE_START_DATE

TENANTS = dg.DynamicPartitionsDefinition(name="bench_tenants")
DAILY = dg.DailyPartitionsDefinition(start_date=LAKE_START_DATE, end_offset=1)
MONTHLY = dg.MonthlyPartitionsDefinition(start_date=LAKE_START_DATE, end_offset=1)

DESIGNS: dict[str, dg.PartitionsDefinition] = {
    "day_x_tenant": dg.MultiPartitionsDefinition({"date": DAILY, "tenant": TENANTS}),
    "month_x_tenant": dg.MultiPartitionsDefinition({"date": MONTHLY, "tenant": TENANTS}),
    "day_only": DAILY,
}

defs = dg.Definitions(
    assets=[
        dg.AssetSpec(key=dg.AssetKey(["bench", name]), partitions_def=partitions)
        for name, partitions in DESIGNS.items()
    ]
)
