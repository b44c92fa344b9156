"""Stripe JSON objects → validated system-of-record rows.

Validation is per record with pydantic: one Stripe object is one row (plus, for a dispute, its
inline balance transactions), so a per-record check gives each rejected object its own reason
with the offending field's path, and the rest of the page still lands. pydantic's validators run
in Rust, a few microseconds per object, well inside the ingestion budget. Money fields are
strict integers: a float amount is rejected, never truncated.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
)

from ledger_assets.lib.ingest.quarantine import Rejection
from ledger_assets.lib.ingest.tables import STRIPE_TABLES, IngestTable
from ledger_assets.lib.money import CURRENCY_EXPONENTS


def _expandable_id(value: object) -> object:
    """Stripe fields like ``balance_transaction`` hold an id, or the object when expanded."""
    if isinstance(value, Mapping):
        return value.get("id")
    return value


def _epoch(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be integer Unix seconds")
    return datetime.fromtimestamp(value, tz=UTC)


ExpandableId = Annotated[str | None, BeforeValidator(_expandable_id)]
Instant = Annotated[datetime, BeforeValidator(_epoch)]
Money = StrictInt


class _StripeObject(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(min_length=3)
    created: Instant

    @field_validator("currency", check_fields=False)
    @classmethod
    def _known_currency(cls, value: str) -> str:
        if value not in CURRENCY_EXPONENTS:
            raise ValueError(f"unknown currency {value!r}")
        return value


class StripeCharge(_StripeObject):
    amount: Money = Field(ge=0)
    amount_captured: Money = Field(ge=0)
    amount_refunded: Money = Field(ge=0)
    currency: str
    status: str
    paid: StrictBool
    captured: StrictBool
    refunded: StrictBool
    disputed: StrictBool
    balance_transaction: ExpandableId = None
    payment_intent: ExpandableId = None
    customer: ExpandableId = None
    description: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    livemode: StrictBool = False


class StripeRefund(_StripeObject):
    charge: Annotated[str, BeforeValidator(_expandable_id)]
    amount: Money = Field(gt=0)
    currency: str
    status: str
    reason: str | None = None
    balance_transaction: ExpandableId = None
    failure_balance_transaction: ExpandableId = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class FeeDetail(BaseModel):
    # Kept whole (fields Stripe adds later included): fee_details is stored as Stripe sent it.
    model_config = ConfigDict(extra="allow", frozen=True)

    amount: Money
    currency: str
    type: str
    description: str | None = None


class StripeBalanceTransaction(_StripeObject):
    amount: Money
    fee: Money
    net: Money
    currency: str
    exchange_rate: float | None = None
    fee_details: list[FeeDetail] = Field(default_factory=list)
    type: str
    reporting_category: str
    source: ExpandableId = None
    status: str
    available_on: Instant


class EvidenceDetails(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    due_by: Annotated[datetime | None, BeforeValidator(lambda v: None if v is None else _epoch(v))]


class StripeDispute(_StripeObject):
    charge: Annotated[str, BeforeValidator(_expandable_id)]
    amount: Money = Field(ge=0)
    currency: str
    reason: str
    status: str
    is_charge_refundable: StrictBool = False
    evidence_details: EvidenceDetails | None = None
    balance_transactions: list[StripeBalanceTransaction] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class StripePayout(_StripeObject):
    amount: Money
    currency: str
    status: str
    arrival_date: Instant
    automatic: StrictBool = True
    balance_transaction: ExpandableId = None
    failure_balance_transaction: ExpandableId = None
    reconciliation_status: str = "not_applicable"
    type: str = "bank_account"
    metadata: dict[str, Any] = Field(default_factory=dict)


MODELS: dict[str, type[_StripeObject]] = {
    "charge": StripeCharge,
    "refund": StripeRefund,
    "dispute": StripeDispute,
    "payout": StripePayout,
    "balance_transaction": StripeBalanceTransaction,
}


@dataclass
class StripeRows:
    """Validated rows by table, and the objects that were rejected."""

    rows: dict[str, list[tuple[object, ...]]] = field(default_factory=dict)
    rejected: list[Rejection] = field(default_factory=list)

    def add(self, table: IngestTable, row: tuple[object, ...]) -> None:
        self.rows.setdefault(table.name, []).append(row)

    @property
    def count(self) -> int:
        return sum(len(r) for r in self.rows.values())


def _json(value: object) -> str:
    """JSON text for a jsonb column; COPY parses it server-side.

    Cheaper than psycopg's Jsonb adapter per value, and most metadata is ``{}``.
    """
    if not value:
        return "[]" if isinstance(value, list) else "{}"
    return json.dumps(value, separators=(",", ":"))


def _bt_row(
    bt: StripeBalanceTransaction, tenant_id: int, source_ts: datetime
) -> tuple[object, ...]:
    return (
        bt.id, tenant_id, bt.amount, bt.fee, bt.net, bt.currency,
        None if bt.exchange_rate is None else Decimal(repr(bt.exchange_rate)),
        _json([d.model_dump() for d in bt.fee_details]), bt.type, bt.reporting_category,
        bt.source, bt.status, bt.available_on, bt.created, source_ts,
    )  # fmt: skip


def _row(obj: _StripeObject, tenant_id: int, source_ts: datetime) -> tuple[object, ...]:
    match obj:
        case StripeCharge():
            return (
                obj.id, tenant_id, obj.amount, obj.amount_captured, obj.amount_refunded,
                obj.currency, obj.status, obj.paid, obj.captured, obj.refunded, obj.disputed,
                obj.balance_transaction, obj.payment_intent, obj.customer, obj.description,
                _json(obj.metadata), obj.livemode, obj.created, source_ts,
            )  # fmt: skip
        case StripeRefund():
            return (
                obj.id, tenant_id, obj.charge, obj.amount, obj.currency, obj.status, obj.reason,
                obj.balance_transaction, obj.failure_balance_transaction, _json(obj.metadata),
                obj.created, source_ts,
            )  # fmt: skip
        case StripeDispute():
            due = obj.evidence_details.due_by if obj.evidence_details else None
            return (
                obj.id, tenant_id, obj.charge, obj.amount, obj.currency, obj.reason, obj.status,
                obj.is_charge_refundable, due, [bt.id for bt in obj.balance_transactions],
                _json(obj.metadata), obj.created, source_ts,
            )  # fmt: skip
        case StripePayout():
            return (
                obj.id, tenant_id, obj.amount, obj.currency, obj.status, obj.arrival_date,
                obj.automatic, obj.balance_transaction, obj.failure_balance_transaction,
                obj.reconciliation_status, obj.type, _json(obj.metadata), obj.created, source_ts,
            )  # fmt: skip
        case StripeBalanceTransaction():
            return _bt_row(obj, tenant_id, source_ts)
    raise TypeError(f"no row mapping for {type(obj).__name__}")


def _reason(error: ValidationError) -> str:
    parts = []
    for problem in error.errors()[:3]:
        where = ".".join(str(p) for p in problem["loc"]) or "object"
        parts.append(f"{where}: {problem['msg']}")
    return "; ".join(parts)


def validate_objects(
    objects: Iterable[Mapping[str, Any]],
    tenant_id: int,
    source_ts: datetime,
    into: StripeRows | None = None,
) -> StripeRows:
    """Validate Stripe objects of any supported type into rows for their tables.

    Args:
        objects: Stripe JSON objects (``object`` names the type).
        tenant_id: the tenant whose Stripe account returned them.
        source_ts: the provider time of this snapshot (event ``created`` or request start).
        into: an accumulator to extend; a new one by default.
    """
    result = into if into is not None else StripeRows()
    for raw in objects:
        kind = raw.get("object")
        model = MODELS.get(str(kind))
        key = raw.get("id")
        if model is None:
            result.rejected.append(
                Rejection("stripe", str(kind), None if key is None else str(key),
                          f"unsupported Stripe object type {kind!r}", dict(raw), tenant_id)
            )  # fmt: skip
            continue
        try:
            obj = model.model_validate(raw)
        except ValidationError as exc:
            result.rejected.append(
                Rejection("stripe", str(kind), None if key is None else str(key), _reason(exc),
                          dict(raw), tenant_id)
            )  # fmt: skip
            continue
        result.add(STRIPE_TABLES[str(kind)], _row(obj, tenant_id, source_ts))
        if isinstance(obj, StripeDispute):
            # The withdrawal/reinstatement transactions arrive inline with the dispute.
            for bt in obj.balance_transactions:
                result.add(STRIPE_TABLES["balance_transaction"], _bt_row(bt, tenant_id, source_ts))
    return result
