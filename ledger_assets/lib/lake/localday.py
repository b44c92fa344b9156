"""A row's account-local day, in DuckDB, exactly as every lake writer computes it.

The snapshot (``snapshot.py``) and the CDC apply (``apply.py``) must put a row in the same day,
so both use :func:`local_date_sql`: ICU's ``timezone(<zone>, <instant>)`` cast to a date, with
each zone a bound constant of its own ``CASE`` branch on a small integer code per tenant. A
per-row ``timezone(<zone column>, ts)`` re-resolves an ICU zone for every row, about three times
the CPU (2.3 vs 0.8 s for 1M rows, measured here).
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from ledger_assets.lib.lake.schema import LakeTable

#: The column (of the rows, or of the joined zone codes) that holds the tenant's zone code.
ZONE_CODE = "zone_code"


def zone_names(zones: Mapping[int, str]) -> list[str]:
    """The distinct zones, in code order (the parameters of :func:`local_date_sql`)."""
    return sorted(set(zones.values()))


def zone_codes(zones: Mapping[int, str]) -> pa.Table:
    """``tenant_id`` -> ``zone_code`` (an index into :func:`zone_names`)."""
    code = {name: i for i, name in enumerate(zone_names(zones))}
    return pa.table(
        {
            "tenant_id": pa.array(list(zones), pa.int32()),
            ZONE_CODE: pa.array([code[z] for z in zones.values()], pa.int32()),
        }
    )


def zone_code_of(tenant_ids: pa.Array | pa.ChunkedArray, zones: Mapping[int, str]) -> pa.Array:
    """Each tenant's zone code, NULL for a tenant without a zone."""
    codes = zone_codes(zones)
    at = pc.index_in(tenant_ids, value_set=codes.column("tenant_id"))
    return codes.column(ZONE_CODE).combine_chunks().take(at)


def local_date_sql(
    lake_table: LakeTable, zones: Mapping[int, str], row: str, code: str
) -> tuple[str, list[object]]:
    """The SQL of a row's local day and its parameters (the zone names, never SQL text).

    Args:
        row: the SQL of the row (a table alias or a struct), whose day column is used.
        code: the SQL of the row's zone code; NULL (a tenant without a zone) gives NULL, which
            the caller reports.
    """
    spec = lake_table.spec
    if spec.day_kind == "local_date":
        return f"case when {code} is not null then {row}.{spec.day_column} end", []
    names = zone_names(zones)
    if not names:
        return "cast(null as date)", []
    branches = " ".join(
        f"when {n} then cast(timezone(?, {row}.{spec.day_column}) as date)"
        for n in range(len(names))
    )
    return f"case {code} {branches} end", list(names)
