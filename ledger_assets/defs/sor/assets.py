"""Asset keys of the Postgres system of record.

The mirrored tables are materialized by the ingestion assets (``defs/stripe``, ``defs/plaid``)
and observed by ``system_of_record_activity_sensor``; every layer above (lake, marts) hangs off
these keys, so lineage in the UI runs from Postgres to the dashboard.
"""

import dagster as dg

SOR_KEY_PREFIX = "sor"


def sor_asset_key(table: str) -> dg.AssetKey:
    return dg.AssetKey([SOR_KEY_PREFIX, table])
