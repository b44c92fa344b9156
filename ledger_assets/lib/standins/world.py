"""The stand-ins' shared state: the generator's history, loaded column-wise, plus live changes.

:meth:`World.build` replays :class:`~ledger_assets.lib.synth.generate.Generator` exactly as
``seed_database`` does (tenants batch first, then tenant by tenant, so the id counters match)
and turns every :class:`~ledger_assets.lib.synth.generate.Batch` into account tables
(Stripe) and items (Plaid). The Stripe history is therefore the seed's rows, field for field;
the events of its last 30 days are derived from it (see :mod:`.history_events`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from ledger_assets.lib.localtime import local_midnight
from ledger_assets.lib.money import exponent
from ledger_assets.lib.standins.columns import I64, NULL, Rows, decode_ids, format_id
from ledger_assets.lib.standins.plaid_store import ADDED, Item, PlaidAccount, PlaidStore
from ledger_assets.lib.standins.stripe_store import (
    DTYPES,
    SOURCE_PREFIXES,
    Account,
    Catalog,
    Renderer,
    Tenant,
)
from ledger_assets.lib.synth.generate import Batch, Generator
from ledger_assets.lib.synth.spec import USD_MINOR, SeedSpec

#: Stripe's Events API reaches back this far.
EVENT_RETENTION_S = 30 * 86_400
_API_VERSION = b"2026-10-28.endive"

Clock = Callable[[], float]


@dataclass(frozen=True)
class StripeEvent:
    """An event as delivered: its account, type, creation time and exact JSON body."""

    id: str
    account_id: str
    type: str
    created: int
    body: bytes


@dataclass(frozen=True)
class PlaidWebhook:
    """A Plaid webhook body (Plaid sends no id; the item and code identify it)."""

    item_id: str
    body: bytes


def _fixed(matrix: npt.NDArray[np.uint8]) -> npt.NDArray[np.str_]:
    """A ``(rows, width)`` ASCII matrix as numpy strings."""
    width = matrix.shape[1]
    return np.ascontiguousarray(matrix).view(f"S{width}").ravel().astype(f"U{width}")


def _nullable_ids(value: Any, prefix: str) -> I64:
    matrix, valid = value
    return np.where(valid, decode_ids(matrix, prefix), NULL)


def _nullable_ints(value: Any) -> I64:
    numbers, valid = value
    return np.where(valid, np.asarray(numbers, dtype=np.int64), NULL)


@dataclass
class World:
    """Everything the two stand-ins serve, and the hooks that publish changes.

    Attributes:
        spec: the seed spec of the history.
        clock: Unix time source (tests may pin it).
        tenants: by tenant id.
        accounts: Stripe connected accounts by ``acct_`` id.
        plaid: the Plaid items.
        next_ids: the next counter per id prefix (continues the generator's counters).
        on_stripe_event: called with each new live event (webhook delivery).
        on_plaid_webhook: called with each new Plaid webhook body.
    """

    spec: SeedSpec
    clock: Clock = time.time
    tenants: dict[int, Tenant] = field(default_factory=dict)
    accounts: dict[str, Account] = field(default_factory=dict)
    plaid: PlaidStore = field(default_factory=PlaidStore)
    catalog: Catalog = field(default_factory=Catalog)
    next_ids: dict[str, int] = field(default_factory=dict)
    on_stripe_event: list[Callable[[StripeEvent], None]] = field(default_factory=list)
    on_plaid_webhook: list[Callable[[PlaidWebhook], None]] = field(default_factory=list)
    horizon: int = 0
    #: Relative activity of each tenant (the generator's charge rate), for live activity.
    tenant_weights: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.renderer = Renderer(self.catalog)

    # ----------------------------------------------------------------------------- building

    @classmethod
    def build(cls, spec: SeedSpec, clock: Clock = time.time) -> World:
        """Load ``spec``'s history (and derive its recent events)."""
        from ledger_assets.lib.standins.history_events import derive_history_events

        world = cls(spec, clock)
        generator = Generator(spec)
        world._load_tenants(generator.tenants_batch())
        world.tenant_weights = {t.tenant_id: t.charges_per_day for t in generator.tenants}
        for tenant in generator.tenants:
            for batch in generator.tenant_batches(tenant):
                world._load(batch)
        world.next_ids = dict(generator.counters.next)
        derive_history_events(world)
        return world

    def take_ids(self, prefix: str, count: int = 1) -> I64:
        """Fresh id counters for live objects, after every id of the history."""
        first = self.next_ids.get(prefix, 0)
        self.next_ids[prefix] = first + count
        return np.arange(first, first + count, dtype=np.int64)

    def account_of_tenant(self, tenant_id: int) -> Account:
        return self.accounts[self.tenants[tenant_id].account_id]

    def _load_tenants(self, batch: Batch) -> None:
        v: Mapping[str, Any] = batch.values
        accounts = _fixed(np.asarray(v["stripe_account_id"]))
        names = pa.array(v["name"]).to_pylist()
        zones = pa.array(v["time_zone"]).to_pylist()
        currencies = _fixed(np.asarray(v["default_currency"]))
        for i in range(batch.rows):
            tenant = Tenant(
                index=i,
                tenant_id=int(np.asarray(v["tenant_id"])[i]),
                account_id=str(accounts[i]),
                name=names[i],
                zone=zones[i],
                currency=str(currencies[i]),
                created=int(np.asarray(v["created_at"])[i]),
            )
            self.tenants[tenant.tenant_id] = tenant
            self.accounts[tenant.account_id] = Account(tenant)
        # The history ends at the first local midnight of spec.end; the latest zone's is last.
        self.horizon = max(
            int(local_midnight(self.spec.end, t.zone).timestamp()) for t in self.tenants.values()
        )

    def _cats(self, column: str, value: Any) -> npt.NDArray[np.int32]:
        array = pa.array(_fixed(value)) if isinstance(value, np.ndarray) else value
        return self.catalog[column].encode(array)

    def _load(self, batch: Batch) -> None:
        v: Mapping[str, Any] = batch.values
        if batch.table.startswith("plaid_"):
            getattr(self, f"_load_{batch.table}")(batch)
            return
        if batch.rows == 0:
            return
        tenant_id = int(np.asarray(v["tenant_id"])[0])
        account = self.account_of_tenant(tenant_id)
        resource = batch.table.removeprefix("stripe_")
        cols: dict[str, Any]
        if resource == "charges":
            cols = {
                "id": decode_ids(v["id"], "ch_"),
                "balance_transaction": _nullable_ids(v["balance_transaction"], "txn_"),
                "payment_intent": decode_ids(v["payment_intent"], "pi_"),
                "customer": _nullable_ids(v["customer"], "cus_"),
            }
            for name in (
                "amount",
                "amount_captured",
                "amount_refunded",
                "paid",
                "captured",
                "refunded",
                "disputed",
                "created",
            ):
                cols[name] = v[name]
            for name in ("status", "description"):
                cols[name] = self._cats(name, v[name])
        elif resource == "refunds":
            charge = decode_ids(v["charge"], "ch_")
            cols = {
                "id": decode_ids(v["id"], "re_"),
                "charge": charge,
                "balance_transaction": decode_ids(v["balance_transaction"], "txn_"),
                "failure_balance_transaction": np.full(batch.rows, NULL, np.int64),
                "payment_intent": self._payment_intents(account, charge),
                "amount": v["amount"],
                "created": v["created"],
                "status": self._cats("status", v["status"]),
                "reason": self._cats("reason", v["reason"]),
            }
        elif resource == "disputes":
            charge = decode_ids(v["charge"], "ch_")
            lists = pa.array(v["balance_transactions"]).to_pylist()
            bt = [[int(x[4:], 36) for x in pair] + [NULL, NULL] for pair in lists]
            cols = {
                "id": decode_ids(v["id"], "dp_"),
                "charge": charge,
                "payment_intent": self._payment_intents(account, charge),
                "amount": v["amount"],
                "created": v["created"],
                "evidence_due_by": v["evidence_due_by"],
                "bt1": np.array([p[0] for p in bt], np.int64),
                "bt2": np.array([p[1] for p in bt], np.int64),
                "status": self._cats("status", v["status"]),
                "reason": self._cats("reason", v["reason"]),
            }
        elif resource == "payouts":
            cols = {
                "id": decode_ids(v["id"], "po_"),
                "balance_transaction": decode_ids(v["balance_transaction"], "txn_"),
                "amount": v["amount"],
                "created": v["created"],
                "arrival_date": v["arrival_date"],
                "automatic": v["automatic"],
                "status": self._cats("status", v["status"]),
                "reconciliation_status": self._cats(
                    "reconciliation_status", v["reconciliation_status"]
                ),
            }
        elif resource == "balance_transactions":
            source = np.array(v["source"], dtype=np.uint8, copy=True)
            kinds = np.full(batch.rows, -1, np.int8)
            for kind, prefix in enumerate(SOURCE_PREFIXES):
                kinds[np.all(source[:, :3] == np.frombuffer(prefix.encode(), np.uint8), 1)] = kind
            if np.any(kinds < 0):
                raise ValueError("balance transaction source with an unknown id prefix")
            source[:, :3] = np.frombuffer(b"ch_", np.uint8)
            cols = {
                "id": decode_ids(v["id"], "txn_"),
                "source": decode_ids(source, "ch_"),
                "source_kind": kinds,
                "payout": _nullable_ids(v["payout"], "po_"),
                "amount": v["amount"],
                "fee": v["fee"],
                "net": v["net"],
                "created": v["created"],
                "available_on": v["available_on"],
                "fee_details": self.catalog["fee_details"].encode(v["fee_details"]),
            }
            for name in ("type", "reporting_category", "status"):
                cols[name] = self._cats(name, v[name])
        else:
            raise ValueError(f"the stand-in does not serve table {batch.table}")
        cols["currency"] = self._cats("currency", v["currency"])
        self._append_sorted(account, resource, cols)

    def _payment_intents(self, account: Account, charges: I64) -> I64:
        table = account.tables["charges"]
        return np.asarray(table["payment_intent"])[account.rows_of("charges", charges)]

    def _append_sorted(self, account: Account, resource: str, cols: dict[str, Any]) -> None:
        """Append rows in ``(created, id)`` order, checking the order the list queries rely on."""
        created = np.asarray(cols["created"], dtype=np.int64)
        ids = np.asarray(cols["id"], dtype=np.int64)
        order = np.lexsort((ids, created))
        sorted_cols = {name: np.asarray(col)[order] for name, col in cols.items()}
        table = account.tables[resource]
        merged_ids = np.concatenate([table["id"][-1:], sorted_cols["id"]])
        merged_created = np.concatenate([table["created"][-1:], sorted_cols["created"]])
        if np.any(np.diff(merged_ids) <= 0) or np.any(np.diff(merged_created) < 0):
            # Cursor lookups search ids inside an account; they must ascend with created.
            raise ValueError(
                f"{resource} of {account.tenant.account_id}: ids do not ascend with created"
            )
        missing = set(DTYPES[resource]) - set(sorted_cols)
        if missing:
            raise KeyError(f"{resource}: no values for {sorted(missing)}")
        table.extend(sorted_cols)

    # ------------------------------------------------------------------------------- Plaid

    def _load_plaid_items(self, batch: Batch) -> None:
        v: Mapping[str, Any] = batch.values
        ids = _fixed(v["item_id"])
        institutions = pa.array(v["institution_id"]).to_pylist()
        names = pa.array(v["institution_name"]).to_pylist()
        for i in range(batch.rows):
            item = Item(str(ids[i]), int(v["tenant_id"][i]), institutions[i], names[i])
            self.plaid.items[item.item_id] = item

    def _load_plaid_accounts(self, batch: Batch) -> None:
        v: Mapping[str, Any] = batch.values
        ids, items = _fixed(v["account_id"]), _fixed(v["item_id"])
        masks, currencies = _fixed(v["mask"]), _fixed(v["currency"])
        texts = {
            k: pa.array(v[k]).to_pylist() for k in ("name", "official_name", "type", "subtype")
        }
        for i in range(batch.rows):
            currency = str(currencies[i])
            opening = int(USD_MINOR.get(currency, 10 ** exponent(currency)) * 50_000)
            self.plaid.items[str(items[i])].accounts.append(
                PlaidAccount(
                    account_id=str(ids[i]),
                    name=texts["name"][i],
                    official_name=texts["official_name"][i],
                    mask=str(masks[i]),
                    type=texts["type"][i],
                    subtype=texts["subtype"][i],
                    currency=currency,
                    opening_minor=opening,
                )
            )

    def _load_plaid_transactions(self, batch: Batch) -> None:
        v: Mapping[str, Any] = batch.values
        if batch.rows == 0:
            return
        items = _fixed(v["item_id"])
        account_ids = _fixed(v["account_id"])
        cols: dict[str, Any] = {
            "id": decode_ids(v["transaction_id"], "ptx_"),
            "amount_minor": np.asarray(v["amount_minor"], np.int64),
            "date": np.asarray(v["date"], np.int64),
            "authorized_date": _nullable_ints(v["authorized_date"]),
            "datetime": _nullable_ints(v["datetime"]),
            "pending": v["pending"],
            "pending_transaction_id": _nullable_ids(v["pending_transaction_id"], "ptx_"),
            "currency": self.plaid.categories("currency").encode(pa.array(_fixed(v["currency"]))),
        }
        for name in (
            "name",
            "merchant_name",
            "payment_channel",
            "category_primary",
            "category_detailed",
        ):
            cols[name] = self.plaid.categories(name).encode(v[name])
        # Initial sync order: ascending "last modified", i.e. by date, then id.
        order = np.lexsort((cols["id"], cols["date"]))
        for item_id in np.unique(items[order]).tolist():
            item = self.plaid.items[item_id]
            mine = order[items[order] == item_id]
            index = {a.account_id: k for k, a in enumerate(item.accounts)}
            part = {name: np.asarray(col)[mine] for name, col in cols.items()}
            part["account"] = np.array([index[a] for a in account_ids[mine].tolist()], np.int32)
            rows = item.transactions.extend(part)
            item.record(ADDED, np.arange(rows.start, rows.stop))
            item.apply_balances(np.arange(rows.start, rows.stop), 1)

    # ------------------------------------------------------------------------------ events

    def event_body(
        self,
        number: int,
        account: Account,
        event_type: str,
        created: int,
        data_object: bytes,
        previous: bytes | None = None,
    ) -> bytes:
        """The JSON of one event."""
        prev = b',"previous_attributes":%b' % previous if previous is not None else b""
        return (
            b'{"id":"%b","object":"event","account":"%b","api_version":"%b","created":%d,'
            b'"data":{"object":%b%b},"livemode":false,"pending_webhooks":1,'
            b'"request":{"id":null,"idempotency_key":null},"type":"%b"}'
            % (
                format_id("evt_", number).encode(),
                account.tenant.account_id.encode(),
                _API_VERSION,
                created,
                data_object,
                prev,
                event_type.encode(),
            )
        )

    def emit(
        self,
        account: Account,
        event_type: str,
        created: int,
        data_object: bytes,
        previous: bytes | None = None,
    ) -> StripeEvent:
        """Record a live event (visible in ``/v1/events``) and hand it to webhook delivery."""
        number = int(self.take_ids("evt_")[0])
        body = self.event_body(number, account, event_type, created, data_object, previous)
        self._append_events(account, np.array([number]), np.array([created]), [event_type], [body])
        event = StripeEvent(
            format_id("evt_", number), account.tenant.account_id, event_type, created, body
        )
        for hook in self.on_stripe_event:
            hook(event)
        return event

    def _append_events(
        self,
        account: Account,
        numbers: I64,
        created: I64,
        types: list[str],
        bodies: list[bytes],
    ) -> None:
        body_col = np.empty(len(bodies), dtype=object)
        body_col[:] = bodies
        account.tables["events"].extend(
            {
                "id": numbers,
                "created": created,
                "type": self.catalog["event_type"].encode(types),
                "body": body_col,
            }
        )

    def event_rows(self, account: Account, types: set[str] | None, prefixes: list[str]) -> Rows:
        """Rows of events still retained (30 days), optionally of some types only."""
        table = account.tables["events"]
        oldest = int(self.clock()) - EVENT_RETENTION_S
        start = int(np.searchsorted(table["created"], oldest, "left"))
        rows = np.arange(start, len(table), dtype=np.intp)
        if types is None and not prefixes:
            return rows
        cats = self.catalog["event_type"]
        wanted = [
            code
            for code, name in enumerate(cats.values)
            if name is not None
            and ((types is not None and name in types) or any(name.startswith(p) for p in prefixes))
        ]
        codes = table["type"][start:]
        return rows[np.isin(codes, np.array(wanted, dtype=np.int32))]

    def publish_plaid(self, item: Item) -> None:
        """Announce new changes of an item (``SYNC_UPDATES_AVAILABLE``)."""
        body = (
            b'{"webhook_type":"TRANSACTIONS","webhook_code":"SYNC_UPDATES_AVAILABLE",'
            b'"item_id":"%b","initial_update_complete":true,"historical_update_complete":true,'
            b'"environment":"sandbox"}' % item.item_id.encode()
        )
        for hook in self.on_plaid_webhook:
            hook(PlaidWebhook(item.item_id, body))
