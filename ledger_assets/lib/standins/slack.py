"""A local stand-in for a Slack incoming webhook: the demo's alert page.

The reconciliation alert sensor posts Slack-compatible JSON to ``LEDGER_ALERT_WEBHOOK_URL``.
In the demo that URL is this app, so alerts travel the same HTTP path they would to Slack and
show on a page: ``POST /alerts`` takes a message, ``GET /alerts`` lists them newest first
(HTML, or JSON with ``Accept: application/json``). Messages are kept in memory, bounded.
"""

from __future__ import annotations

import html
import json
import threading
from collections import deque
from datetime import UTC, datetime

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

#: Messages kept for the page; older ones are in the sensor's alerts.jsonl log.
MAX_MESSAGES = 200


def message_text(payload: dict[str, object]) -> str:
    """The readable text of a Slack message: ``text``, else its section blocks' text."""
    text = payload.get("text")
    if isinstance(text, str) and text:
        return text
    parts = []
    blocks = payload.get("blocks")
    for block in blocks if isinstance(blocks, list) else []:
        inner = block.get("text") if isinstance(block, dict) else None
        if isinstance(inner, dict) and isinstance(inner.get("text"), str):
            parts.append(str(inner["text"]))
    return "\n".join(parts)


def build_slack_standin() -> Starlette:
    received: deque[dict[str, object]] = deque(maxlen=MAX_MESSAGES)
    lock = threading.Lock()

    async def post(request: Request) -> Response:
        try:
            payload = json.loads(await request.body())
        except json.JSONDecodeError:
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        if not isinstance(payload, dict) or not (payload.get("text") or payload.get("blocks")):
            # Slack answers 400 "no_text" too: a message with nothing to show is a bug upstream.
            return JSONResponse({"error": "no_text"}, status_code=400)
        with lock:
            received.appendleft({"at": datetime.now(UTC).isoformat(), "payload": payload})
        return Response("ok", media_type="text/plain")

    async def page(request: Request) -> Response:
        with lock:
            messages = list(received)
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse(messages)
        items = "".join(
            f"<li><time>{html.escape(str(m['at']))}</time>"
            f"<pre>{html.escape(message_text(m['payload']))}</pre></li>"  # type: ignore[arg-type]
            for m in messages
        )
        body = (
            "<!doctype html><html><head><meta charset='utf-8'>"
            "<meta http-equiv='refresh' content='15'><title>ledger alerts</title>"
            "<style>body{font:14px system-ui;margin:2em}li{margin:1em 0}"
            "pre{white-space:pre-wrap;background:#f6f6f6;padding:.6em}</style></head><body>"
            f"<h1>Reconciliation alerts</h1><p>{len(messages)} message(s), newest first.</p>"
            f"<ul>{items or '<li>No alerts yet.</li>'}</ul></body></html>"
        )
        return HTMLResponse(body)

    return Starlette(
        routes=[
            Route("/alerts", post, methods=["POST"]),
            Route("/alerts", page, methods=["GET"]),
        ]
    )
