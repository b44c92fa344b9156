"""The Plaid stand-in: ``/transactions/sync`` and friends, for the real ``plaid-python`` SDK.

Endpoints: ``/transactions/sync``, ``/webhook_verification_key/get``, ``/item/get`` and
``/accounts/get`` (all ``POST`` with a JSON body). Client credentials come from the
``PLAID-CLIENT-ID``/``PLAID-SECRET`` headers the SDK sends (or ``client_id``/``secret`` in the
body) and must match the configured ones. Errors are Plaid's error object
(``error_type``, ``error_code``, ``error_message``, ``display_message``, ``request_id``), which
the SDK raises as ``plaid.ApiException`` with the JSON in ``.body``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ledger_assets.lib.standins.faults import Fault, Faults, FaultSpecError, MutationFault
from ledger_assets.lib.standins.plaid_store import (
    CursorError,
    Item,
    MutationDuringPaginationError,
    account_json,
    item_id_of_token,
)
from ledger_assets.lib.standins.webhooks import PlaidSigningKey
from ledger_assets.lib.standins.world import World

_JSON = "application/json"
MUTATION = "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION"


class PlaidStandin:
    """The Plaid stand-in application over a :class:`World`.

    Args:
        world: the state to serve.
        client_id: the expected ``PLAID-CLIENT-ID``.
        secret: the expected ``PLAID-SECRET``.
        signing_key: the webhook key pair (its public JWK is served).
        tick: runs live ticks on demand (``POST /_control/tick``); None disables it.
        webhook_url: the ``webhook`` shown on items.
    """

    def __init__(
        self,
        world: World,
        client_id: str,
        secret: str,
        signing_key: PlaidSigningKey,
        tick: Callable[[int], None] | None = None,
        webhook_url: str | None = None,
    ) -> None:
        self.world = world
        self.client_id = client_id
        self.secret = secret
        self.key = signing_key
        self.webhook_url = webhook_url
        self.faults = Faults()
        self.mutations: list[MutationFault] = []
        self._tick = tick
        self._request_ids = itertools.count(1)
        self.app = Starlette(
            routes=[
                Route("/transactions/sync", self.transactions_sync, methods=["POST"]),
                Route("/webhook_verification_key/get", self.verification_key, methods=["POST"]),
                Route("/item/get", self.item_get, methods=["POST"]),
                Route("/accounts/get", self.accounts_get, methods=["POST"]),
                Route("/_control/faults", self.control_faults, methods=["POST", "DELETE"]),
                Route("/_control/tick", self.control_tick, methods=["POST"]),
                Route("/_control/items", self.control_items, methods=["GET"]),
            ]
        )

    def _request_id(self) -> str:
        return f"standin-req-{next(self._request_ids):08d}"

    def error(
        self, status: int, error_type: str, code: str, message: str, display: str | None = None
    ) -> Response:
        """A Plaid error response."""
        return JSONResponse(
            {
                "error_type": error_type,
                "error_code": code,
                "error_message": message,
                "display_message": display,
                "request_id": self._request_id(),
                "causes": [],
                "status": status,
                "documentation_url": f"https://plaid.com/docs/errors/#{code.lower()}",
                "suggested_action": None,
            },
            status,
        )

    async def _open(
        self, request: Request, needs_item: bool
    ) -> tuple[dict[str, Any], Item | None] | Response:
        """Faults, JSON body, credentials and (optionally) the item of ``access_token``."""
        fault = self.faults.take(request.url.path)
        if fault is not None:
            if fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            if fault.status is not None:
                return self.error(
                    fault.status,
                    "API_ERROR",
                    "INTERNAL_SERVER_ERROR",
                    "an unexpected error occurred (injected by the stand-in)",
                )
        try:
            body = json.loads(await request.body() or b"{}")
            if not isinstance(body, dict):
                raise ValueError("body is not a JSON object")
        except ValueError:
            return self.error(
                400, "INVALID_REQUEST", "INVALID_BODY", "body could not be parsed as JSON"
            )
        client_id = request.headers.get("plaid-client-id") or body.get("client_id")
        secret = request.headers.get("plaid-secret") or body.get("secret")
        if client_id != self.client_id or secret != self.secret:
            return self.error(
                400, "INVALID_INPUT", "INVALID_API_KEYS", "invalid client_id or secret provided"
            )
        if not needs_item:
            return body, None
        token = body.get("access_token")
        item_id = item_id_of_token(token) if isinstance(token, str) else None
        item = self.world.plaid.items.get(item_id or "")
        if item is None:
            return self.error(
                400,
                "INVALID_INPUT",
                "INVALID_ACCESS_TOKEN",
                "provided access token is in an invalid format or does not exist. "
                "expected format: access-<environment>-<identifier>",
            )
        return body, item

    async def transactions_sync(self, request: Request) -> Response:
        opened = await self._open(request, needs_item=True)
        if isinstance(opened, Response):
            return opened
        body, item = opened
        assert item is not None
        count = body.get("count", 100)
        if not isinstance(count, int) or not 1 <= count <= 500:
            return self.error(
                400,
                "INVALID_REQUEST",
                "INVALID_FIELD",
                "count must be an integer between 1 and 500",
            )
        cursor = body.get("cursor") or ""
        store = self.world.plaid
        try:
            _, _, page = store.open(item, cursor)
            armed = next((m for m in self.mutations if m.matches(item.item_id, page)), None)
            if armed is not None:
                armed.count -= 1
                if armed.count == 0:
                    self.mutations.remove(armed)
                raise MutationDuringPaginationError(item.item_id)
            result = store.sync(item, cursor, count)
        except CursorError as exc:
            return self.error(400, "INVALID_REQUEST", "INVALID_FIELD", f"cursor: {exc}")
        except MutationDuringPaginationError:
            return self.error(
                400,
                "TRANSACTIONS_ERROR",
                MUTATION,
                "Underlying transaction data changed since last page was fetched. Please restart "
                "pagination from last update.",
            )
        out = (
            b'{"accounts":%b,"added":[%b],"has_more":%b,"modified":[%b],"next_cursor":"%b",'
            b'"removed":[%b],"request_id":"%b",'
            b'"transactions_update_status":"HISTORICAL_UPDATE_COMPLETE"}'
            % (
                store.accounts_json(item),
                b",".join(result.added),
                b"true" if result.has_more else b"false",
                b",".join(result.modified),
                result.next_cursor.encode(),
                b",".join(result.removed),
                self._request_id().encode(),
            )
        )
        return Response(out, media_type=_JSON)

    async def verification_key(self, request: Request) -> Response:
        opened = await self._open(request, needs_item=False)
        if isinstance(opened, Response):
            return opened
        body, _ = opened
        if body.get("key_id") != self.key.kid:
            return self.error(
                400,
                "INVALID_INPUT",
                "INVALID_WEBHOOK_VERIFICATION_KEY_ID",
                "invalid key_id provided",
            )
        return JSONResponse({"key": self.key.jwk(), "request_id": self._request_id()})

    def _item_json(self, item: Item) -> dict[str, Any]:
        return {
            "item_id": item.item_id,
            "institution_id": item.institution_id,
            "institution_name": item.institution_name,
            "webhook": self.webhook_url or "",
            "error": None,
            "available_products": ["balance"],
            "billed_products": ["transactions"],
            "products": ["transactions"],
            "consent_expiration_time": None,
            "update_type": "background",
        }

    async def item_get(self, request: Request) -> Response:
        opened = await self._open(request, needs_item=True)
        if isinstance(opened, Response):
            return opened
        _, item = opened
        assert item is not None
        return JSONResponse({"item": self._item_json(item), "request_id": self._request_id()})

    async def accounts_get(self, request: Request) -> Response:
        opened = await self._open(request, needs_item=True)
        if isinstance(opened, Response):
            return opened
        _, item = opened
        assert item is not None
        body = b'{"accounts":[%b],"item":%b,"request_id":"%b"}' % (
            b",".join(account_json(a) for a in item.accounts),
            json.dumps(self._item_json(item)).encode(),
            self._request_id().encode(),
        )
        return Response(body, media_type=_JSON)

    # ------------------------------------------------------------------------------ control

    async def control_faults(self, request: Request) -> Response:
        """Arm a fault.

        ``{"error_code": "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION", "page": N,
        "item_id": ..., "count": 1}`` fails page N of the next pagination(s); any other body is
        a :class:`~.faults.Fault` (e.g. ``{"status": 500, "count": 2}``). ``DELETE`` clears all.
        """
        if request.method == "DELETE":
            self.faults.clear()
            self.mutations.clear()
            return JSONResponse({"armed": 0})
        try:
            spec = json.loads(await request.body())
            if spec.get("error_code") == MUTATION:
                page, count = spec.get("page", 2), spec.get("count", 1)
                if not isinstance(page, int) or page < 1 or not isinstance(count, int) or count < 1:
                    raise FaultSpecError("page and count must be positive integers")
                self.mutations.append(MutationFault(page, spec.get("item_id"), count))
            else:
                self.faults.arm(Fault.parse(spec))
        except (FaultSpecError, json.JSONDecodeError, TypeError, AttributeError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse({"armed": len(self.faults.rules) + len(self.mutations)})

    async def control_tick(self, request: Request) -> Response:
        """Run ``count`` live ticks now."""
        if self._tick is None:
            return JSONResponse({"error": "live activity is not available"}, 409)
        body = await request.body()
        count = int(json.loads(body).get("count", 1)) if body else 1
        self._tick(count)
        return JSONResponse({"ticks": count})

    async def control_items(self, request: Request) -> Response:
        """Items with their tenant, access token and accounts (stands in for Plaid Link)."""
        items = [
            {
                "item_id": item.item_id,
                "tenant_id": item.tenant_id,
                "stripe_account_id": self.world.tenants[item.tenant_id].account_id,
                "access_token": item.access_token,
                "account_ids": [a.account_id for a in item.accounts],
            }
            for item in self.world.plaid.items.values()
        ]
        return JSONResponse({"items": items})
