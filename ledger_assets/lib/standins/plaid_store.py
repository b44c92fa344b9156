"""Plaid items, accounts and transactions, and the per-item change log of ``/transactions/sync``.

Each item keeps its transactions in a columnar :class:`~.columns.Table` and an append-only
change log of ``(op, transaction row)``. A cursor is a position in that log, so any cursor ever
handed out replays from where it was, and a pagination that spans a change of the log is caught
the way Plaid reports it (``TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION``).

Amounts are integer minor units inside and are written as exact decimal literals (``12.3``,
``5.125``, ``1500``): never through ``float`` formatting, which could print ``12.299999``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ledger_assets.lib.money import exponent
from ledger_assets.lib.standins.columns import NULL, Categories, Table, bool_json, id_json

ADDED, MODIFIED, REMOVED = 0, 1, 2
TX_DTYPES: dict[str, npt.DTypeLike] = {
    "id": np.int64,
    "account": np.int32,
    "amount_minor": np.int64,
    "currency": np.int32,
    "date": np.int64,
    "authorized_date": np.int64,
    "datetime": np.int64,
    "name": np.int32,
    "merchant_name": np.int32,
    "payment_channel": np.int32,
    "category_primary": np.int32,
    "category_detailed": np.int32,
    "pending": np.bool_,
    "pending_transaction_id": np.int64,
}
LOG_DTYPES: dict[str, npt.DTypeLike] = {"op": np.int8, "tx": np.int64}
_ACCOUNT = (
    b'{"account_id":"%b","balances":{"available":%b,"current":%b,"iso_currency_code":"%b",'
    b'"limit":%b,"unofficial_currency_code":null},"mask":%b,"name":%b,"official_name":%b,'
    b'"subtype":%b,"type":%b}'
)
_TX = (
    b'{"account_id":"%b","account_owner":null,"amount":%b,"authorized_date":%b,'
    b'"authorized_datetime":null,"category":null,"category_id":null,"check_number":null,'
    b'"counterparties":[],"date":%b,"datetime":%b,"iso_currency_code":%b,"location":{'
    b'"address":null,"city":null,"country":null,"lat":null,"lon":null,"postal_code":null,'
    b'"region":null,"store_number":null},"logo_url":null,"merchant_entity_id":null,'
    b'"merchant_name":%b,"name":%b,"payment_channel":%b,"payment_meta":{"by_order_of":null,'
    b'"payee":null,"payer":null,"payment_method":null,"payment_processor":null,"ppd_id":null,'
    b'"reason":null,"reference_number":null},"pending":%b,"pending_transaction_id":%b,'
    b'"personal_finance_category":{"confidence_level":"VERY_HIGH","detailed":%b,"primary":%b},'
    b'"transaction_code":null,"transaction_id":%b,"unofficial_currency_code":null,'
    b'"website":null}'
)


def decimal_literal(minor: int, exp: int) -> str:
    """``minor`` units with ``exp`` decimals as the shortest exact JSON number text."""
    if exp == 0:
        return str(minor)
    whole, frac = divmod(abs(minor), 10**exp)
    digits = f"{frac:0{exp}d}".rstrip("0")
    text = f"{whole}.{digits}" if digits else str(whole)
    return f"-{text}" if minor < 0 else text


def _dates(days: npt.NDArray[np.int64]) -> list[bytes]:
    text = days.astype("datetime64[D]").astype("S10").tolist()
    return [b"null" if d == NULL else b'"%b"' % t for d, t in zip(days.tolist(), text, strict=True)]


def _datetimes(seconds: npt.NDArray[np.int64]) -> list[bytes]:
    text = seconds.astype("datetime64[s]").astype("S19").tolist()
    return [
        b"null" if s == NULL else b'"%bZ"' % t for s, t in zip(seconds.tolist(), text, strict=True)
    ]


class CursorError(ValueError):
    """A cursor that this item never handed out."""


class MutationDuringPaginationError(RuntimeError):
    """The item's log changed between two pages of one pagination."""


@dataclass
class PlaidAccount:
    """One bank account of an item, with running balances in minor units."""

    account_id: str
    name: str
    official_name: str | None
    mask: str | None
    type: str
    subtype: str | None
    currency: str
    opening_minor: int
    posted_minor: int = 0
    pending_minor: int = 0

    def balances(self) -> tuple[int, int | None, int | None]:
        """``(current, available, limit)`` in minor units, Plaid's conventions per account type.

        Depository: money in the account. Credit: what is owed, against a limit.
        """
        if self.type == "credit":
            current = max(self.posted_minor, 0)
            return current, self.opening_minor - current - self.pending_minor, self.opening_minor
        current = self.opening_minor - self.posted_minor
        return current, current - self.pending_minor, None


@dataclass
class Item:
    """One Plaid item (a bank login) of a tenant."""

    item_id: str
    tenant_id: int
    institution_id: str
    institution_name: str
    accounts: list[PlaidAccount] = field(default_factory=list)
    transactions: Table = field(default_factory=lambda: Table(TX_DTYPES))
    log: Table = field(default_factory=lambda: Table(LOG_DTYPES))

    @property
    def access_token(self) -> str:
        return access_token_for(self.item_id)

    def record(self, op: int, rows: npt.ArrayLike) -> None:
        """Append one change per transaction row to the log."""
        tx = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        self.log.extend({"op": np.full(len(tx), op, np.int8), "tx": tx})

    def apply_balances(self, rows: npt.ArrayLike, sign: int) -> None:
        """Add (sign=1) or take back (sign=-1) transactions from their accounts' balances."""
        t = self.transactions
        for row in np.atleast_1d(np.asarray(rows, dtype=np.intp)).tolist():
            account = self.accounts[int(t["account"][row])]
            amount = sign * int(t["amount_minor"][row])
            if t["pending"][row]:
                account.pending_minor += amount
            else:
                account.posted_minor += amount


def access_token_for(item_id: str) -> str:
    """The stand-in's access token of an item (Plaid's ``access-<env>-<identifier>`` shape)."""
    return f"access-sandbox-{item_id}"


def item_id_of_token(token: str) -> str | None:
    """The item an access token names, or None if it is not a stand-in token."""
    prefix = "access-sandbox-"
    return token[len(prefix) :] if token.startswith(prefix) else None


def encode_cursor(item_id: str, position: int, end: int, page: int) -> str:
    """An opaque cursor: a log position, plus, while a pagination is under way (``page`` > 0),
    the log length it pinned and how many pages it has served."""
    raw = f"v1|{item_id}|{position}|{end}|{page}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(item_id: str, cursor: str) -> tuple[int, int, int]:
    """``(position, end, page)`` of a cursor of this item.

    Raises:
        CursorError: the cursor is malformed or belongs to another item.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, owner, position, end, page = raw.split("|")
        if version != "v1" or owner != item_id:
            raise CursorError("cursor belongs to another item")
        return int(position), int(end), int(page)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise CursorError(f"cursor {cursor!r} is not valid for this item") from exc


@dataclass
class SyncPage:
    """One ``/transactions/sync`` response body, before JSON framing."""

    added: list[bytes]
    modified: list[bytes]
    removed: list[bytes]
    next_cursor: str
    has_more: bool


class PlaidStore:
    """Every item, by id, and the renderer of their transactions."""

    def __init__(self) -> None:
        self.items: dict[str, Item] = {}
        self.cat: dict[str, Categories] = {}

    def categories(self, column: str) -> Categories:
        """The value table of a categorical transaction column."""
        cats = self.cat.get(column)
        if cats is None:
            cats = self.cat[column] = Categories()
        return cats

    def open(self, item: Item, cursor: str) -> tuple[int, int, int]:
        """Where a request with ``cursor`` reads: ``(position, stop, page number)``.

        A cursor that ends an update (or "") starts a new pagination, which pins the current
        end of the log; its later pages stop there.

        Raises:
            CursorError: a cursor of another item or a malformed one.
            MutationDuringPaginationError: the log grew since this pagination's first page.
        """
        total = len(item.log)
        if not cursor:
            return 0, total, 1
        position, end, page = decode_cursor(item.item_id, cursor)
        if position > total or end > total or position > end:
            raise CursorError("cursor is ahead of the item's history")
        if page == 0:
            return position, total, 1
        if end != total:
            raise MutationDuringPaginationError(item.item_id)
        return position, end, page + 1

    def sync(self, item: Item, cursor: str, count: int) -> SyncPage:
        """One page of an item's changes after ``cursor`` ("" = from the beginning).

        Raises:
            CursorError: see :meth:`open`.
            MutationDuringPaginationError: see :meth:`open`.
        """
        position, stop, page = self.open(item, cursor)
        upto = min(position + count, stop)
        ops = item.log["op"][position:upto]
        rows = item.log["tx"][position:upto]
        has_more = upto < stop
        return SyncPage(
            added=self.render(item, rows[ops == ADDED]),
            modified=self.render(item, rows[ops == MODIFIED]),
            removed=self.render_removed(item, rows[ops == REMOVED]),
            next_cursor=encode_cursor(item.item_id, upto, stop, page if has_more else 0),
            has_more=has_more,
        )

    def render(self, item: Item, rows: npt.NDArray[np.int64]) -> list[bytes]:
        """Transactions as Plaid JSON objects, at their current state."""
        if len(rows) == 0:
            return []
        t = item.transactions
        c = t.take(rows.astype(np.intp))
        accounts = [item.accounts[a].account_id.encode() for a in c["account"].tolist()]
        currency = self.categories("currency")
        exps = {code: exponent(currency.text(code) or "") for code in set(c["currency"].tolist())}
        amounts = [
            decimal_literal(m, exps[cur]).encode()
            for m, cur in zip(c["amount_minor"].tolist(), c["currency"].tolist(), strict=True)
        ]
        iso = [
            b'"%b"' % (currency.text(code) or "").upper().encode()
            for code in c["currency"].tolist()
        ]
        cat = self.categories
        columns = (
            accounts,
            amounts,
            _dates(c["authorized_date"]),
            _dates(c["date"]),
            _datetimes(c["datetime"]),
            iso,
            cat("merchant_name").json(c["merchant_name"]),
            cat("name").json(c["name"]),
            cat("payment_channel").json(c["payment_channel"]),
            bool_json(c["pending"]),
            id_json("ptx_", c["pending_transaction_id"]),
            cat("category_detailed").json(c["category_detailed"]),
            cat("category_primary").json(c["category_primary"]),
            id_json("ptx_", c["id"]),
        )
        return [_TX % row for row in zip(*columns, strict=True)]

    def render_removed(self, item: Item, rows: npt.NDArray[np.int64]) -> list[bytes]:
        """``{"account_id", "transaction_id"}`` of removed transactions."""
        t = item.transactions
        ids = id_json("ptx_", t["id"][rows.astype(np.intp)])
        accounts = [item.accounts[int(a)].account_id.encode() for a in t["account"][rows]]
        return [
            b'{"account_id":"%b","transaction_id":%b}' % pair
            for pair in zip(accounts, ids, strict=True)
        ]

    def accounts_json(self, item: Item) -> bytes:
        """The item's ``AccountBase`` objects as a JSON array, balances as exact decimals."""
        return b"[%b]" % b",".join(account_json(a) for a in item.accounts)


def account_json(account: PlaidAccount) -> bytes:
    """One ``AccountBase`` object with its balances."""
    exp = exponent(account.currency)
    current, available, limit = account.balances()

    def number(value: int | None) -> bytes:
        return b"null" if value is None else decimal_literal(value, exp).encode()

    def text(value: str | None) -> bytes:
        return json.dumps(value).encode()

    return _ACCOUNT % (
        account.account_id.encode(),
        number(available),
        number(current),
        account.currency.upper().encode(),
        number(limit),
        text(account.mask),
        text(account.name),
        text(account.official_name),
        text(account.subtype),
        text(account.type),
    )
