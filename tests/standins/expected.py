"""The generator's rows as plain Python, straight from the Batches (what seed_database loads)."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pyarrow as pa

from ledger_assets.lib.synth.generate import Generator
from ledger_assets.lib.synth.ids import ids_as_str
from ledger_assets.lib.synth.spec import SeedSpec


def _column(value: Any) -> list[Any]:
    if isinstance(value, tuple):
        values, valid = value
        plain = _column(values)
        return [v if ok else None for v, ok in zip(plain, valid.tolist(), strict=True)]
    if isinstance(value, pa.Array):
        return value.to_pylist()
    array = np.asarray(value)
    if array.dtype == np.uint8 and array.ndim == 2:
        return ids_as_str(array)
    return array.tolist()


@cache
def rows(spec: SeedSpec) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``{stripe_account_id: {table: [row, ...]}}`` with ids as strings."""
    generator = Generator(spec)
    tenants = generator.tenants_batch()
    accounts = dict(
        zip(
            _column(tenants.values["tenant_id"]),
            _column(tenants.values["stripe_account_id"]),
            strict=True,
        )
    )
    out: dict[str, dict[str, list[dict[str, Any]]]] = {a: {} for a in accounts.values()}
    for tenant in generator.tenants:
        for batch in generator.tenant_batches(tenant):
            columns = {name: _column(v) for name, v in batch.values.items()}
            out[accounts[tenant.tenant_id]][batch.table] = [
                {name: col[i] for name, col in columns.items()} for i in range(batch.rows)
            ]
    return out


def newest_first(table: list[dict[str, Any]], key: str = "id") -> list[dict[str, Any]]:
    """Stripe's list order: created descending, then id descending."""
    return sorted(table, key=lambda r: (r["created"], r[key]), reverse=True)
