"""The Stripe stand-in: the read side of ``/v1`` that the pipeline uses, for the real SDK.

Requests are scoped by the ``Stripe-Account`` header to one connected account (a tenant). A
request without the header acts as the platform account, which, as with Stripe Connect
standard accounts, owns no charges: its lists are empty and its retrieves are 404; only
``GET /v1/accounts`` lists the connected accounts. An unknown account is a 403
(``stripe.PermissionError``), a missing or wrong key a 401 (``stripe.AuthenticationError``).

All handlers are ``async`` and never await in the middle of reading or changing the store,
so they and the live ticks (same event loop) see consistent state without locks.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ledger_assets.lib.standins.columns import parse_id
from ledger_assets.lib.standins.faults import Fault, Faults, FaultSpecError
from ledger_assets.lib.standins.stripe_store import (
    RESOURCES,
    Account,
    CreatedRange,
    ListError,
    account_json,
    render_list,
)
from ledger_assets.lib.standins.world import EVENT_RETENTION_S, World

_JSON = "application/json"
_BOUNDS = ("gt", "gte", "lt", "lte")


def stripe_error(
    status: int,
    message: str,
    error_type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A Stripe error response (``{"error": {...}}``) that the SDK maps to its exceptions."""
    error: dict[str, Any] = {"type": error_type, "message": message}
    if param is not None:
        error["param"] = param
    if code is not None:
        error["code"] = code
    return JSONResponse({"error": error}, status, headers=dict(headers or {}))


def _created(params: Mapping[str, str]) -> CreatedRange:
    """The ``created`` filter as ``[gte, lt)`` (the SDK sends ``created[gte]`` percent-encoded)."""
    rng = CreatedRange()
    for key, value in params.items():
        if key != "created" and not (key.startswith("created[") and key.endswith("]")):
            continue
        bound = "eq" if key == "created" else key[len("created[") : -1]
        if bound not in (*_BOUNDS, "eq"):
            raise ListError(f"Invalid created parameter: {key}", key)
        try:
            t = int(value)
        except ValueError:
            raise ListError(f"Invalid integer: {value}", key) from None
        low = {"gt": t + 1, "gte": t, "eq": t}.get(bound)
        high = {"lt": t, "lte": t + 1, "eq": t + 1}.get(bound)
        if low is not None:
            rng.gte = low if rng.gte is None else max(rng.gte, low)
        if high is not None:
            rng.lt = high if rng.lt is None else min(rng.lt, high)
    return rng


def _limit(params: Mapping[str, str]) -> int:
    text = params.get("limit", "10")
    if not text.lstrip("-").isdigit() or not 1 <= int(text) <= 100:
        raise ListError(
            f"Invalid limit: must be an integer between 1 and 100, got {text!r}", "limit"
        )
    return int(text)


def _indexed(params: Mapping[str, str], name: str) -> list[str]:
    """Values of an array parameter (``types[0]=...&types[1]=...``, also ``types[]=``)."""
    return [v for k, v in params.items() if k.startswith(f"{name}[") and k.endswith("]")]


class StripeStandin:
    """The Stripe stand-in application over a :class:`World`.

    Args:
        world: the state to serve.
        api_key: the secret key clients must send as ``Authorization: Bearer``.
        tick: runs live ticks on demand (``POST /_control/tick``); None disables it.
    """

    def __init__(self, world: World, api_key: str, tick: Callable[[int], None] | None = None):
        self.world = world
        self.api_key = api_key
        self.faults = Faults()
        self._tick = tick
        self.requests = 0
        self.app = Starlette(
            routes=[
                Route("/v1/accounts", self.list_accounts, methods=["GET"]),
                Route("/v1/accounts/{id}", self.get_account, methods=["GET"]),
                Route("/v1/{resource}", self.list_objects, methods=["GET"]),
                Route("/v1/{resource}/{id}", self.get_object, methods=["GET"]),
                Route("/_control/faults", self.control_faults, methods=["POST", "DELETE"]),
                Route("/_control/tick", self.control_tick, methods=["POST"]),
                Route("/_control/stats", self.control_stats, methods=["GET"]),
            ]
        )

    # ------------------------------------------------------------------------------- guards

    async def _guard(self, request: Request) -> Response | None:
        """Auth and injected faults; None when the request may proceed."""
        self.requests += 1
        fault = self.faults.take(request.url.path)
        if fault is not None:
            if fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            if fault.status is not None:
                return self._fault_response(fault)
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not secrets.compare_digest(
            auth[len("Bearer ") :].encode(), self.api_key.encode()
        ):
            shown = auth[len("Bearer ") :][:8] + "****" if auth.startswith("Bearer ") else None
            message = (
                f"Invalid API Key provided: {shown}"
                if shown
                else "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth "
                "(e.g. 'Authorization: Bearer YOUR_SECRET_KEY')."
            )
            return stripe_error(401, message)
        return None

    @staticmethod
    def _fault_response(fault: Fault) -> Response:
        headers: dict[str, str] = {}
        if fault.should_retry is not None:
            headers["Stripe-Should-Retry"] = "true" if fault.should_retry else "false"
        if fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
        if fault.status == 429:
            return stripe_error(
                429,
                "Request rate limit exceeded. Learn more about rate limits here "
                "https://stripe.com/docs/rate-limits.",
                code="rate_limit",
                headers=headers,
            )
        assert fault.status is not None
        return stripe_error(
            fault.status,
            "An unknown error occurred (injected by the stand-in).",
            error_type="api_error",
            headers=headers,
        )

    def _account(self, request: Request) -> Account | Response | None:
        """The account of the ``Stripe-Account`` header; None for the platform."""
        account_id = request.headers.get("stripe-account")
        if not account_id:
            return None
        account = self.world.accounts.get(account_id)
        if account is None:
            return stripe_error(
                403,
                f"The provided key 'sk_test_****' does not have access to account '{account_id}' "
                "(or that account does not exist). Application access may have been revoked.",
            )
        return account

    # ----------------------------------------------------------------------------- handlers

    async def list_objects(self, request: Request) -> Response:
        refused = await self._guard(request)
        if refused is not None:
            return refused
        name = request.path_params["resource"]
        resource = RESOURCES.get(name)
        if resource is None:
            return self._unknown_url(request)
        account = self._account(request)
        if isinstance(account, Response):
            return account
        url = f"/v1/{name}"
        params = request.query_params
        try:
            limit = _limit(params)
            created = _created(params)
            after = self._cursor(params, "starting_after", resource.prefix)
            before = self._cursor(params, "ending_before", resource.prefix)
            if after is not None and before is not None:
                raise ListError(
                    "You may only specify one of these parameters: ending_before, starting_after.",
                    "ending_before",
                )
            if account is None:
                return Response(render_list(url, [], False), media_type=_JSON)
            subset = self._subset(account, name, params)
            page = account.page(name, limit, created, after, before, subset)
        except ListError as exc:
            return stripe_error(exc.status, str(exc), param=exc.param)
        table = account.tables[name]
        objects = self.world.renderer.render(account, name, table.take(page.rows))
        return Response(render_list(url, objects, page.has_more), media_type=_JSON)

    @staticmethod
    def _cursor(params: Mapping[str, str], param: str, prefix: str) -> int | None:
        text = params.get(param)
        if text is None or text == "":
            return None
        number = parse_id(text, prefix)
        if number is None:
            raise ListError(f"No such object: '{text}'", param, 400)
        return number

    def _subset(self, account: Account, name: str, params: Mapping[str, str]) -> Any:
        """Rows passing the endpoint's own filters, or None if there are none."""
        table = account.tables[name]
        mask: Any = None

        def narrow(condition: Any) -> None:
            nonlocal mask
            mask = condition if mask is None else mask & condition

        if name == "events":
            types = _indexed(params, "types")
            single = params.get("type")
            if types and single:
                raise ListError(
                    "You may only specify one of these parameters: type, types.", "type"
                )
            wanted = set(types) | ({single} if single and "*" not in single else set())
            prefixes = [single.split("*")[0]] if single and "*" in single else []
            return self.world.event_rows(account, wanted or None, prefixes)
        if name in ("refunds", "disputes") and params.get("charge"):
            number = parse_id(params["charge"], "ch_")
            narrow(table["charge"] == (-2 if number is None else number))
        if name == "balance_transactions":
            if params.get("payout"):
                number = parse_id(params["payout"], "po_")
                narrow(table["payout"] == (-2 if number is None else number))
            if params.get("type"):
                code = self.world.catalog["type"].code(params["type"])
                narrow(table["type"] == code)
            if params.get("source"):
                source = params["source"]
                kind = next(
                    (k for k, p in enumerate(("ch_", "re_", "dp_", "po_")) if source.startswith(p)),
                    None,
                )
                number = parse_id(source, source[:3]) if kind is not None else None
                narrow((table["source_kind"] == kind) & (table["source"] == (number or -2)))
        return None if mask is None else np.flatnonzero(mask)

    async def get_object(self, request: Request) -> Response:
        refused = await self._guard(request)
        if refused is not None:
            return refused
        name, object_id = request.path_params["resource"], request.path_params["id"]
        resource = RESOURCES.get(name)
        if resource is None:
            return self._unknown_url(request)
        account = self._account(request)
        if isinstance(account, Response):
            return account
        number = parse_id(object_id, resource.prefix)
        row = None if account is None or number is None else account.row_of(name, number)
        if row is not None and name == "events":
            assert account is not None
            oldest = self.world.clock() - EVENT_RETENTION_S
            if account.tables["events"]["created"][row] < oldest:
                row = None  # past Stripe's 30-day retention
        if account is None or row is None:
            return stripe_error(
                404,
                f"No such {resource.object}: '{object_id}'",
                param="id",
                code="resource_missing",
            )
        return Response(self.world.renderer.one(account, name, row), media_type=_JSON)

    async def list_accounts(self, request: Request) -> Response:
        refused = await self._guard(request)
        if refused is not None:
            return refused
        tenants = sorted(self.world.tenants.values(), key=lambda t: t.account_id, reverse=True)
        try:
            limit = _limit(request.query_params)
        except ListError as exc:
            return stripe_error(400, str(exc), param=exc.param)
        after = request.query_params.get("starting_after")
        if after:
            tenants = [t for t in tenants if t.account_id < after]
        page = tenants[:limit]
        body = render_list("/v1/accounts", [account_json(t) for t in page], len(tenants) > limit)
        return Response(body, media_type=_JSON)

    async def get_account(self, request: Request) -> Response:
        refused = await self._guard(request)
        if refused is not None:
            return refused
        account = self.world.accounts.get(request.path_params["id"])
        if account is None:
            return stripe_error(404, f"No such account: '{request.path_params['id']}'", param="id")
        return Response(account_json(account.tenant), media_type=_JSON)

    @staticmethod
    def _unknown_url(request: Request) -> Response:
        return stripe_error(404, f"Unrecognized request URL (GET: {request.url.path}).")

    # ------------------------------------------------------------------------------ control

    async def control_faults(self, request: Request) -> Response:
        """``POST`` arms a rule (JSON body, see :class:`~.faults.Fault`); ``DELETE`` clears."""
        if request.method == "DELETE":
            self.faults.clear()
            return JSONResponse({"armed": 0})
        try:
            self.faults.arm(Fault.parse(json.loads(await request.body())))
        except (FaultSpecError, json.JSONDecodeError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse({"armed": len(self.faults.rules)})

    async def control_tick(self, request: Request) -> Response:
        """Run ``count`` live ticks now (deterministic activity for tests and demos)."""
        if self._tick is None:
            return JSONResponse({"error": "live activity is not available"}, 409)
        body = await request.body()
        count = int(json.loads(body).get("count", 1)) if body else 1
        self._tick(count)
        return JSONResponse({"ticks": count})

    async def control_stats(self, request: Request) -> Response:
        """Object counts per account and resource, and requests served."""
        counts = {
            acct: {name: len(table) for name, table in account.tables.items()}
            for acct, account in self.world.accounts.items()
        }
        return JSONResponse({"requests": self.requests, "accounts": counts})
