"""Stripe-shaped JSON objects for ingestion tests (the API's field names and types)."""

from typing import Any

T0 = 1_735_000_000  # 2024-12-24T00:26:40Z


def tenant(conn: Any, tenant_id: int = 1, zone: str = "America/New_York") -> None:
    conn.execute(
        "insert into ledger.tenants (tenant_id, name, time_zone, default_currency, "
        "stripe_account_id) values (%s, %s, %s, 'usd', %s)",
        (tenant_id, f"tenant {tenant_id}", zone, f"acct_{tenant_id}"),
    )


def charge(
    cid: str = "ch_1", amount: int = 1000, created: int = T0, **extra: Any
) -> dict[str, Any]:
    return {
        "id": cid, "object": "charge", "amount": amount, "amount_captured": amount,
        "amount_refunded": 0, "currency": "usd", "status": "succeeded", "paid": True,
        "captured": True, "refunded": False, "disputed": False,
        "balance_transaction": f"txn_{cid}", "payment_intent": None, "customer": "cus_1",
        "description": None, "metadata": {"order": "42"}, "livemode": False, "created": created,
    } | extra  # fmt: skip


def balance_transaction(
    tid: str, amount: int, fee: int, created: int = T0, **extra: Any
) -> dict[str, Any]:
    return {
        "id": tid, "object": "balance_transaction", "amount": amount, "fee": fee,
        "net": amount - fee, "currency": "usd", "exchange_rate": None,
        "fee_details": [{"amount": fee, "currency": "usd", "type": "stripe_fee",
                         "description": "Stripe processing fees"}] if fee else [],
        "type": "charge", "reporting_category": "charge", "source": None, "status": "available",
        "available_on": created + 2 * 86400, "created": created,
    } | extra  # fmt: skip


def dispute(
    did: str = "dp_1",
    charge_id: str = "ch_1",
    status: str = "needs_response",
    created: int = T0 + 100 * 86400,
    withdrawn: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    bts = (
        [balance_transaction(f"txn_{did}_w", -1000, 1500, created, type="adjustment",
                             reporting_category="dispute", source=did)]
        if withdrawn else []
    )  # fmt: skip
    return {
        "id": did, "object": "dispute", "amount": 1000, "currency": "usd", "charge": charge_id,
        "reason": "fraudulent", "status": status, "is_charge_refundable": False,
        "evidence_details": {"due_by": created + 7 * 86400}, "balance_transactions": bts,
        "metadata": {}, "created": created,
    } | extra  # fmt: skip


def refund(
    rid: str = "re_1", charge_id: str = "ch_1", amount: int = 300, **extra: Any
) -> dict[str, Any]:
    return {
        "id": rid, "object": "refund", "amount": amount, "currency": "usd", "charge": charge_id,
        "status": "succeeded", "reason": "requested_by_customer",
        "balance_transaction": f"txn_{rid}", "failure_balance_transaction": None,
        "metadata": {}, "created": T0 + 3600,
    } | extra  # fmt: skip
