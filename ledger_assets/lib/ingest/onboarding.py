"""Onboarding: tenants from the platform's Stripe connected accounts, Plaid items from Link.

A tenant is a merchant on the platform: its Stripe connected account carries the platform's
tenant id in ``metadata.tenant_id`` (set when the merchant signed up), its dashboard time zone
and its default currency. Re-running is harmless: existing tenants are updated in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
import stripe

from ledger_assets.lib.ingest.stripe_pull import PAGE_LIMIT


@dataclass(frozen=True)
class OnboardReport:
    tenants: int
    skipped_accounts: list[str]


def sync_tenants_from_stripe(
    conn: psycopg.Connection[tuple[object, ...]], client: stripe.StripeClient
) -> OnboardReport:
    """Upsert a tenant for every connected account that names one; list the others."""
    params: dict[str, Any] = {"limit": PAGE_LIMIT}
    rows, skipped = [], []
    while True:
        body = client.raw_request("get", "/v1/accounts", **params).data
        for account in body["data"]:
            tenant = str((account.get("metadata") or {}).get("tenant_id", ""))
            zone = ((account.get("settings") or {}).get("dashboard") or {}).get("timezone")
            if not tenant.isdigit() or not zone:
                skipped.append(str(account["id"]))
                continue
            name = (account.get("business_profile") or {}).get("name") or account["id"]
            rows.append(
                (int(tenant), name, zone, str(account["default_currency"]).lower(), account["id"])
            )
        if not body.get("has_more") or not body["data"]:
            break
        params["starting_after"] = body["data"][-1]["id"]
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            """
            insert into ledger.tenants
                (tenant_id, name, time_zone, default_currency, stripe_account_id)
            values (%s, %s, %s, %s, %s)
            on conflict (tenant_id) do update set
                name = excluded.name, time_zone = excluded.time_zone,
                default_currency = excluded.default_currency,
                stripe_account_id = excluded.stripe_account_id
            where (ledger.tenants.name, ledger.tenants.time_zone,
                   ledger.tenants.default_currency, ledger.tenants.stripe_account_id)
                is distinct from (excluded.name, excluded.time_zone,
                                  excluded.default_currency, excluded.stripe_account_id)
            """,
            rows,
        )
    return OnboardReport(len(rows), skipped)


def register_plaid_items(
    conn: psycopg.Connection[tuple[object, ...]], items: Iterable[Mapping[str, Any]]
) -> int:
    """Record linked Plaid items (``item_id``, ``tenant_id``, ``access_token``; institution
    fields when Link returned them) so the sync can read them."""
    rows = [
        (
            str(item["item_id"]), int(item["tenant_id"]),
            str(item.get("institution_id") or "unknown"),
            str(item.get("institution_name") or "unknown"), str(item["access_token"]),
        )
        for item in items
    ]  # fmt: skip
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            """
            insert into ledger.plaid_items
                (item_id, tenant_id, institution_id, institution_name, access_token)
            values (%s, %s, %s, %s, %s)
            on conflict (item_id) do update set access_token = excluded.access_token
            """,
            rows,
        )
    return len(rows)
