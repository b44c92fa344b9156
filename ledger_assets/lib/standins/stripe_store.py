"""Stripe objects of the connected accounts: columnar tables, list queries and JSON rendering.

Every account keeps one :class:`~.columns.Table` per resource whose rows are in ``(created, id)``
order. The generator hands out ids in that order and live activity only appends newer objects
with larger ids, so a list request is a few ``np.searchsorted`` calls on the account's columns
(created bounds, cursors, id lookups) and rendering touches only the rows of the page.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ledger_assets.lib.standins.columns import (
    I64,
    NULL,
    Categories,
    Rows,
    Table,
    bool_json,
    format_id,
    id_json,
)

Cols = Mapping[str, npt.NDArray[Any]]

#: Prefixes of a balance transaction's polymorphic ``source``, by ``source_kind`` code.
SOURCE_PREFIXES: tuple[str, ...] = ("ch_", "re_", "dp_", "po_")

_ID = np.int64
_CAT = np.int32
DTYPES: dict[str, dict[str, npt.DTypeLike]] = {
    "charges": {
        "id": _ID,
        "created": np.int64,
        "amount": np.int64,
        "amount_captured": np.int64,
        "amount_refunded": np.int64,
        "currency": _CAT,
        "status": _CAT,
        "paid": np.bool_,
        "captured": np.bool_,
        "refunded": np.bool_,
        "disputed": np.bool_,
        "balance_transaction": _ID,
        "payment_intent": _ID,
        "customer": _ID,
        "description": _CAT,
    },
    "refunds": {
        "id": _ID,
        "created": np.int64,
        "charge": _ID,
        "amount": np.int64,
        "currency": _CAT,
        "status": _CAT,
        "reason": _CAT,
        "balance_transaction": _ID,
        "failure_balance_transaction": _ID,
        "payment_intent": _ID,
    },
    "disputes": {
        "id": _ID,
        "created": np.int64,
        "charge": _ID,
        "amount": np.int64,
        "currency": _CAT,
        "reason": _CAT,
        "status": _CAT,
        "evidence_due_by": np.int64,
        "bt1": _ID,
        "bt2": _ID,
        "payment_intent": _ID,
    },
    "payouts": {
        "id": _ID,
        "created": np.int64,
        "amount": np.int64,
        "currency": _CAT,
        "status": _CAT,
        "arrival_date": np.int64,
        "automatic": np.bool_,
        "balance_transaction": _ID,
        "reconciliation_status": _CAT,
    },
    "balance_transactions": {
        "id": _ID,
        "created": np.int64,
        "amount": np.int64,
        "fee": np.int64,
        "net": np.int64,
        "currency": _CAT,
        "fee_details": _CAT,
        "type": _CAT,
        "reporting_category": _CAT,
        "source_kind": np.int8,
        "source": _ID,
        "status": _CAT,
        "payout": _ID,
        "available_on": np.int64,
    },
    "events": {"id": _ID, "created": np.int64, "type": _CAT, "body": np.object_},
}


@dataclass(frozen=True)
class Resource:
    """One list endpoint: ``/v1/<name>`` of objects ``object`` with ids ``prefix...``."""

    name: str
    object: str
    prefix: str


RESOURCES: dict[str, Resource] = {
    r.name: r
    for r in (
        Resource("charges", "charge", "ch_"),
        Resource("refunds", "refund", "re_"),
        Resource("disputes", "dispute", "dp_"),
        Resource("payouts", "payout", "po_"),
        Resource("balance_transactions", "balance_transaction", "txn_"),
        Resource("events", "event", "evt_"),
    )
}


class Catalog:
    """The categorical value tables shared by every account."""

    def __init__(self) -> None:
        self._by_column: dict[str, Categories] = {"fee_details": Categories(raw_json=True)}

    def __getitem__(self, column: str) -> Categories:
        cats = self._by_column.get(column)
        if cats is None:
            cats = self._by_column[column] = Categories()
        return cats


@dataclass(frozen=True)
class Tenant:
    """What the stand-in knows of a tenant: its connected account and profile."""

    index: int
    tenant_id: int
    account_id: str
    name: str
    zone: str
    currency: str
    created: int


@dataclass
class Page:
    """Rows of one list response, newest first."""

    rows: Rows
    has_more: bool


@dataclass
class CreatedRange:
    """``created[gt|gte|lt|lte]`` (or ``created=<int>``) as a half-open ``[gte, lt)``."""

    gte: int | None = None
    lt: int | None = None

    def bounds(self, created: I64) -> tuple[int, int]:
        lo = 0 if self.gte is None else int(np.searchsorted(created, self.gte, "left"))
        hi = len(created) if self.lt is None else int(np.searchsorted(created, self.lt, "left"))
        return lo, max(lo, hi)


class ListError(ValueError):
    """A list or retrieve request Stripe would refuse with ``invalid_request_error``."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.status = status


@dataclass
class Account:
    """One connected account's objects."""

    tenant: Tenant
    tables: dict[str, Table] = field(
        default_factory=lambda: {name: Table(d) for name, d in DTYPES.items()}
    )

    def row_of(self, resource: str, number: int) -> int | None:
        """The row of the object with id counter ``number``, if this account has it."""
        ids = self.tables[resource]["id"]
        pos = int(np.searchsorted(ids, number))
        return pos if pos < len(ids) and int(ids[pos]) == number else None

    def rows_of(self, resource: str, numbers: I64) -> Rows:
        """Rows of ids known to exist in this account (dispute BTs, refund charges)."""
        ids = self.tables[resource]["id"]
        rows = np.searchsorted(ids, numbers).astype(np.intp)
        if len(rows) and (rows.max() >= len(ids) or np.any(ids[rows] != numbers)):
            raise KeyError(f"{resource}: ids missing from account {self.tenant.account_id}")
        return rows

    def page(
        self,
        resource: str,
        limit: int,
        created: CreatedRange,
        starting_after: int | None = None,
        ending_before: int | None = None,
        subset: Rows | None = None,
    ) -> Page:
        """The rows of one list page (Stripe's newest-first cursor pagination).

        Args:
            resource: the table.
            limit: page size.
            created: the ``created`` filter.
            starting_after: id counter of the cursor object: the page holds older objects.
            ending_before: id counter of the cursor object: the page holds newer objects.
            subset: ascending rows that pass the other filters (``charge=``, ``type=``...);
                None means all rows.

        Raises:
            ListError: a cursor names an object this account does not have.
        """
        table = self.tables[resource]
        all_created = table["created"]
        created_col, ids = all_created, table["id"]
        if subset is not None:
            created_col, ids = created_col[subset], ids[subset]
        lo, hi = created.bounds(created_col)
        if starting_after is not None:
            hi = min(
                hi,
                self._cursor_pos(
                    resource, starting_after, "starting_after", created_col, ids, after=False
                ),
            )
        if ending_before is not None:
            lo = max(
                lo,
                self._cursor_pos(
                    resource, ending_before, "ending_before", created_col, ids, after=True
                ),
            )
        hi = max(lo, hi)
        if ending_before is not None and starting_after is None:
            start, end = lo, min(lo + limit, hi)
        else:
            start, end = max(lo, hi - limit), hi
        rows = np.arange(end - 1, start - 1, -1, dtype=np.intp)
        if subset is not None:
            rows = subset[rows]
        return Page(rows, hi - lo > limit)

    def _cursor_pos(
        self,
        resource: str,
        number: int,
        param: str,
        created_col: I64,
        ids: I64,
        after: bool,
    ) -> int:
        row = self.row_of(resource, number)
        if row is None:
            found = RESOURCES[resource]
            raise ListError(f"No such {found.object}: '{format_id(found.prefix, number)}'", param)
        c = int(self.tables[resource]["created"][row])
        lo = int(np.searchsorted(created_col, c, "left"))
        hi = int(np.searchsorted(created_col, c, "right"))
        side: Any = "right" if after else "left"
        return lo + int(np.searchsorted(ids[lo:hi], number, side))


# ---------------------------------------------------------------------------------- rendering

_CARD = (
    b'"payment_method_details":{"card":{"brand":"visa","checks":{"address_line1_check":null,'
    b'"address_postal_code_check":null,"cvc_check":"pass"},"country":"US","exp_month":12,'
    b'"exp_year":2030,"fingerprint":"standin","funding":"credit","last4":"4242",'
    b'"network":"visa"},"type":"card"}'
)
_BILLING = (
    b'"billing_details":{"address":{"city":null,"country":null,"line1":null,"line2":null,'
    b'"postal_code":null,"state":null},"email":null,"name":null,"phone":null}'
)
_OUTCOME_OK = (
    b'{"network_status":"approved_by_network","reason":null,"risk_level":"normal",'
    b'"seller_message":"Payment complete.","type":"authorized"}'
)
_OUTCOME_FAILED = (
    b'{"network_status":"declined_by_network","reason":"generic_decline","risk_level":"normal",'
    b'"seller_message":"The bank did not return any further details with this decline.",'
    b'"type":"issuer_declined"}'
)
_CHARGE = (
    b'{"id":%b,"object":"charge","amount":%d,"amount_captured":%d,"amount_refunded":%d,'
    b'"application":null,"application_fee":null,"application_fee_amount":null,'
    b'"balance_transaction":%b,' + _BILLING + b',"calculated_statement_descriptor":"LEDGER",'
    b'"captured":%b,"created":%d,"currency":%b,"customer":%b,"description":%b,"disputed":%b,'
    b'"failure_balance_transaction":null,"failure_code":%b,"failure_message":%b,'
    b'"fraud_details":{},"livemode":false,"metadata":{},"on_behalf_of":null,"outcome":%b,'
    b'"paid":%b,"payment_intent":%b,"payment_method":%b,' + _CARD + b',"receipt_email":null,'
    b'"refunded":%b,"review":null,"shipping":null,"source_transfer":null,'
    b'"statement_descriptor":null,"statement_descriptor_suffix":null,"status":%b,'
    b'"transfer_data":null,"transfer_group":null}'
)
_REFUND = (
    b'{"id":%b,"object":"refund","amount":%d,"balance_transaction":%b,"charge":%b,'
    b'"created":%d,"currency":%b,"destination_details":{"card":{"reference_status":"available",'
    b'"reference_type":"acquirer_reference_number","type":"refund"},"type":"card"},'
    b'"failure_balance_transaction":%b,"metadata":{},"payment_intent":%b,"reason":%b,'
    b'"receipt_number":null,"source_transfer_reversal":null,"status":%b,'
    b'"transfer_reversal":null}'
)
_DISPUTE = (
    b'{"id":%b,"object":"dispute","amount":%d,"balance_transactions":[%b],"charge":%b,'
    b'"created":%d,"currency":%b,"evidence":{"customer_name":null,"product_description":null,'
    b'"uncategorized_text":null},"evidence_details":{"due_by":%d,"has_evidence":%b,'
    b'"past_due":false,"submission_count":%d},"is_charge_refundable":false,"livemode":false,'
    b'"metadata":{},"network_reason_code":null,"payment_intent":%b,"reason":%b,"status":%b}'
)
_PAYOUT = (
    b'{"id":%b,"object":"payout","amount":%d,"application_fee":null,'
    b'"application_fee_amount":null,"arrival_date":%d,"automatic":%b,"balance_transaction":%b,'
    b'"created":%d,"currency":%b,"description":"STRIPE PAYOUT","destination":null,'
    b'"failure_balance_transaction":null,"failure_code":null,"failure_message":null,'
    b'"livemode":false,"metadata":{},"method":"standard","original_payout":null,'
    b'"reconciliation_status":%b,"reversed_by":null,"source_type":"card",'
    b'"statement_descriptor":null,"status":%b,"type":"bank_account"}'
)
_BT = (
    b'{"id":%b,"object":"balance_transaction","amount":%d,"available_on":%d,"created":%d,'
    b'"currency":%b,"description":%b,"exchange_rate":null,"fee":%d,"fee_details":%b,"net":%d,'
    b'"reporting_category":%b,"source":%b,"status":%b,"type":%b}'
)
_UNDECIDED = {"warning_needs_response", "needs_response"}


class Renderer:
    """Renders page-aligned columns of one account as Stripe JSON objects (bytes).

    Args:
        catalog: the categorical value tables.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.cat = catalog
        self._failed_code = catalog["status"].code("failed")
        self._bt_desc = {
            "charge": b'"Charge"',
            "refund": b'"REFUND FOR CHARGE"',
            "payout": b'"STRIPE PAYOUT"',
            "adjustment": b'"Chargeback withdrawal"',
        }

    def render(self, account: Account, resource: str, cols: Cols) -> list[bytes]:
        """JSON of each row of ``cols`` (columns of ``resource`` taken at the page's rows)."""
        method: Callable[[Account, Cols], list[bytes]] = getattr(self, f"_{resource}")
        return method(account, cols)

    def one(self, account: Account, resource: str, row: int, **patch: Any) -> bytes:
        """One object, optionally with some fields replaced (an event's past snapshot)."""
        cols = dict(account.tables[resource].take([row]))
        for name, value in patch.items():
            cols[name] = np.array([value], dtype=cols[name].dtype)
        return self.render(account, resource, cols)[0]

    def _charges(self, account: Account, c: Cols) -> list[bytes]:
        failed = c["status"] == self._failed_code
        cat = self.cat
        fail_code = [b'"card_declined"' if f else b"null" for f in failed.tolist()]
        fail_msg = [b'"Your card was declined."' if f else b"null" for f in failed.tolist()]
        outcome = [_OUTCOME_FAILED if f else _OUTCOME_OK for f in failed.tolist()]
        columns: Sequence[Sequence[Any]] = (
            id_json("ch_", c["id"]),
            c["amount"].tolist(),
            c["amount_captured"].tolist(),
            c["amount_refunded"].tolist(),
            id_json("txn_", c["balance_transaction"]),
            bool_json(c["captured"]),
            c["created"].tolist(),
            cat["currency"].json(c["currency"]),
            id_json("cus_", c["customer"]),
            cat["description"].json(c["description"]),
            bool_json(c["disputed"]),
            fail_code,
            fail_msg,
            outcome,
            bool_json(c["paid"]),
            id_json("pi_", c["payment_intent"]),
            id_json("pm_", c["payment_intent"]),
            bool_json(c["refunded"]),
            cat["status"].json(c["status"]),
        )
        return [_CHARGE % row for row in zip(*columns, strict=True)]

    def _refunds(self, account: Account, c: Cols) -> list[bytes]:
        cat = self.cat
        columns: Sequence[Sequence[Any]] = (
            id_json("re_", c["id"]),
            c["amount"].tolist(),
            id_json("txn_", c["balance_transaction"]),
            id_json("ch_", c["charge"]),
            c["created"].tolist(),
            cat["currency"].json(c["currency"]),
            id_json("txn_", c["failure_balance_transaction"]),
            id_json("pi_", c["payment_intent"]),
            cat["reason"].json(c["reason"]),
            cat["status"].json(c["status"]),
        )
        return [_REFUND % row for row in zip(*columns, strict=True)]

    def _disputes(self, account: Account, c: Cols) -> list[bytes]:
        cat = self.cat
        bt1, bt2 = c["bt1"], c["bt2"]
        wanted = np.concatenate([bt1[bt1 != NULL], bt2[bt2 != NULL]])
        by_id: dict[int, bytes] = {}
        if len(wanted):
            rows = account.rows_of("balance_transactions", wanted)
            bts = account.tables["balance_transactions"].take(rows)
            by_id = dict(
                zip(wanted.tolist(), self._balance_transactions(account, bts), strict=True)
            )
        lists = [
            b",".join(by_id[b] for b in pair if b != NULL)
            for pair in zip(bt1.tolist(), bt2.tolist(), strict=True)
        ]
        statuses = [cat["status"].text(int(s)) for s in c["status"]]
        evidence = [s not in _UNDECIDED and not (s or "").startswith("warning") for s in statuses]
        columns: Sequence[Sequence[Any]] = (
            id_json("dp_", c["id"]),
            c["amount"].tolist(),
            lists,
            id_json("ch_", c["charge"]),
            c["created"].tolist(),
            cat["currency"].json(c["currency"]),
            c["evidence_due_by"].tolist(),
            [b"true" if e else b"false" for e in evidence],
            [int(e) for e in evidence],
            id_json("pi_", c["payment_intent"]),
            cat["reason"].json(c["reason"]),
            cat["status"].json(c["status"]),
        )
        return [_DISPUTE % row for row in zip(*columns, strict=True)]

    def _payouts(self, account: Account, c: Cols) -> list[bytes]:
        cat = self.cat
        columns: Sequence[Sequence[Any]] = (
            id_json("po_", c["id"]),
            c["amount"].tolist(),
            c["arrival_date"].tolist(),
            bool_json(c["automatic"]),
            id_json("txn_", c["balance_transaction"]),
            c["created"].tolist(),
            cat["currency"].json(c["currency"]),
            cat["reconciliation_status"].json(c["reconciliation_status"]),
            cat["status"].json(c["status"]),
        )
        return [_PAYOUT % row for row in zip(*columns, strict=True)]

    def _balance_transactions(self, account: Account, c: Cols) -> list[bytes]:
        cat = self.cat
        types = cat["type"].json(c["type"])
        source = np.empty(len(c["source"]), dtype=object)
        for kind, prefix in enumerate(SOURCE_PREFIXES):
            mask = c["source_kind"] == kind
            if mask.any():
                source[mask] = id_json(prefix, c["source"][mask])
        desc = [self._bt_desc.get(t.strip(b'"').decode(), b"null") for t in types]
        columns: Sequence[Sequence[Any]] = (
            id_json("txn_", c["id"]),
            c["amount"].tolist(),
            c["available_on"].tolist(),
            c["created"].tolist(),
            cat["currency"].json(c["currency"]),
            desc,
            c["fee"].tolist(),
            cat["fee_details"].json(c["fee_details"]),
            c["net"].tolist(),
            cat["reporting_category"].json(c["reporting_category"]),
            source.tolist(),
            cat["status"].json(c["status"]),
            types,
        )
        return [_BT % row for row in zip(*columns, strict=True)]

    def _events(self, account: Account, c: Cols) -> list[bytes]:
        bodies: list[bytes] = c["body"].tolist()
        return bodies


def render_list(url: str, objects: list[bytes], has_more: bool) -> bytes:
    """Stripe's list envelope around rendered objects."""
    return b'{"object":"list","data":[%b],"has_more":%b,"url":"%b"}' % (
        b",".join(objects),
        b"true" if has_more else b"false",
        url.encode(),
    )


def account_json(tenant: Tenant) -> bytes:
    """The ``account`` object of a tenant's connected account (``GET /v1/accounts``)."""
    return (
        b'{"id":"%b","object":"account","business_profile":{"name":"%b"},"charges_enabled":true,'
        b'"created":%d,"default_currency":"%b","details_submitted":true,"livemode":false,'
        b'"metadata":{"tenant_id":"%d"},"payouts_enabled":true,"settings":{"dashboard":'
        b'{"display_name":"%b","timezone":"%b"}},"type":"standard"}'
        % (
            tenant.account_id.encode(),
            tenant.name.encode(),
            tenant.created,
            tenant.currency.encode(),
            tenant.tenant_id,
            tenant.name.encode(),
            tenant.zone.encode(),
        )
    )


__all__ = [
    "DTYPES",
    "NULL",
    "RESOURCES",
    "SOURCE_PREFIXES",
    "Account",
    "Catalog",
    "CreatedRange",
    "ListError",
    "Page",
    "Renderer",
    "Resource",
    "Tenant",
    "render_list",
]
