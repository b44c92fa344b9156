"""The webhook receiver: one ASGI endpoint per provider, landing verified events in the inbox.

Each endpoint verifies first and answers with a clear status:

* 200 — landed (or a duplicate of an event already landed: ``{"duplicate": true}``);
* 400 — forged, replayed, expired or altered delivery (nothing is written: an unverified body
  is never trusted enough to keep);
* 422 — verified but for an account or item we do not know: the event is kept in the
  quarantine with that reason, so nothing is lost when the tenant is onboarded later.

Applying the events is not done here: the receiver must answer within the providers' timeouts
(Plaid: 10 s) whatever the database is doing, and appliers run under Dagster.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg_pool import ConnectionPool
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ledger_assets.lib.ingest.inbox import (
    InboxEvent,
    land,
    land_plaid_webhook,
    tenant_for_stripe_account,
)
from ledger_assets.lib.ingest.quarantine import Rejection, quarantine
from ledger_assets.lib.logs import get_logger
from ledger_assets.lib.webhooks.plaid_verification import PlaidKeyCache, verify_plaid_webhook
from ledger_assets.lib.webhooks.rejection import WebhookRejectedError
from ledger_assets.lib.webhooks.stripe_signature import verify_stripe_event

log = get_logger(__name__)


@dataclass(frozen=True)
class ReceiverConfig:
    dsn: str
    stripe_webhook_secret: str
    #: Fetches a Plaid JWK by key id (``/webhook_verification_key/get``).
    plaid_key_fetcher: Callable[[str], Mapping[str, Any] | None]


def build_receiver(config: ReceiverConfig) -> Starlette:
    """The ASGI app: ``POST /webhooks/stripe``, ``POST /webhooks/plaid``, ``GET /healthz``."""
    pool = ConnectionPool(config.dsn, min_size=1, max_size=4, open=False)
    plaid_keys = PlaidKeyCache(config.plaid_key_fetcher)

    def stripe_endpoint(request: Request, body: bytes) -> JSONResponse:
        try:
            event = verify_stripe_event(
                body, request.headers.get("stripe-signature"), config.stripe_webhook_secret
            )
        except WebhookRejectedError as exc:
            log.warning("stripe webhook rejected", reason=str(exc))
            return JSONResponse({"error": str(exc)}, status_code=400)
        with pool.connection() as conn:
            tenant_id = tenant_for_stripe_account(conn, event.account)
            if tenant_id is None:
                quarantine(conn, [Rejection("stripe", "event", event.id,
                                            f"webhook for unknown Stripe account {event.account!r}",
                                            event.payload)])  # fmt: skip
                return JSONResponse(
                    {"error": f"unknown Stripe account {event.account!r}"}, status_code=422
                )
            new = land(
                conn,
                InboxEvent("stripe", event.id, event.type, event.created, event.payload, tenant_id),
            )
        log.info("stripe webhook landed", event_id=event.id, tenant_id=tenant_id, new=new)
        return JSONResponse({"received": True, "duplicate": not new})

    def plaid_endpoint(request: Request, body: bytes) -> JSONResponse:
        try:
            hook = verify_plaid_webhook(body, request.headers.get("plaid-verification"), plaid_keys)
        except WebhookRejectedError as exc:
            log.warning("plaid webhook rejected", reason=str(exc))
            return JSONResponse({"error": str(exc)}, status_code=400)
        with pool.connection() as conn:
            row = conn.execute(
                "select tenant_id from ledger.plaid_items where item_id = %s", (hook.item_id,)
            ).fetchone()
            if row is None:
                quarantine(conn, [Rejection("plaid", "webhook", hook.content_key,
                                            f"webhook for unknown Plaid item {hook.item_id!r}",
                                            hook.payload)])  # fmt: skip
                return JSONResponse(
                    {"error": f"unknown Plaid item {hook.item_id!r}"}, status_code=422
                )
            tenant_id = int(str(row[0]))
            new = land_plaid_webhook(
                conn,
                hook.content_key,
                InboxEvent(
                    "plaid", hook.content_key, f"{hook.webhook_type}.{hook.webhook_code}",
                    datetime.fromtimestamp(hook.issued_at, tz=UTC), hook.payload, tenant_id,
                ),
            )  # fmt: skip
        log.info("plaid webhook landed", item_id=hook.item_id, tenant_id=tenant_id, new=new)
        return JSONResponse({"received": True, "duplicate": not new})

    async def stripe_route(request: Request) -> JSONResponse:
        body = await request.body()
        return await _in_thread(stripe_endpoint, request, body)

    async def plaid_route(request: Request) -> JSONResponse:
        body = await request.body()
        return await _in_thread(plaid_endpoint, request, body)

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        pool.open()
        try:
            yield
        finally:
            pool.close()

    return Starlette(
        routes=[
            Route("/webhooks/stripe", stripe_route, methods=["POST"]),
            Route("/webhooks/plaid", plaid_route, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


async def _in_thread(
    handler: Callable[[Request, bytes], JSONResponse], request: Request, body: bytes
) -> JSONResponse:
    # The database calls are blocking; run them off the event loop.
    return await run_in_threadpool(handler, request, body)
