"""The Postgres system of record, as external assets.

Each mirrored table is an asset that Dagster does not materialize: Postgres is the truth. The
``system_of_record_activity_sensor`` records an observation whenever a table's write counter
moves, so the UI shows when the truth changed, and lineage runs from Postgres through the lake
to the marts.
"""

import dagster as dg

from ledger_assets.lib.sor.catalog import MIRRORED_TABLES

SOR_KEY_PREFIX = "sor"


def sor_asset_key(table: str) -> dg.AssetKey:
    return dg.AssetKey([SOR_KEY_PREFIX, table])


SYSTEM_OF_RECORD_TABLES = [
    dg.AssetSpec(
        sor_asset_key(t.name),
        description=(
            f"Postgres table ledger.{t.name}, the system of record. One row per object "
            f"(key {t.primary_key}); a row's local day comes from {t.day_column}."
        ),
        group_name="system_of_record",
        kinds={"postgres"},
    )
    for t in MIRRORED_TABLES
]
