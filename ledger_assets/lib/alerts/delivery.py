"""Delivering alerts: a webhook POST, a local JSON-lines log, and the decide-send-record loop.

The webhook is posted with ``urllib.request`` from the standard library: ``httpx`` is only a
dev dependency of this project and one small JSON POST does not justify a new run-time one.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ledger_assets.lib.alerts.book import AlertBook, AlertDecision, CheckOutcome
from ledger_assets.lib.alerts.slack import slack_payload
from ledger_assets.lib.logs import get_logger

log = get_logger(__name__)


class AlertDeliveryError(RuntimeError):
    """The webhook did not accept the alert; it is not marked as sent and will be retried.

    Attributes:
        decision: the decision that could not be delivered.
    """

    def __init__(self, message: str, decision: AlertDecision | None = None) -> None:
        super().__init__(message)
        self.decision = decision


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is not a delivery: urllib would re-send a POST as a bodiless GET."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def post_alert(url: str, payload: dict[str, object], timeout: float = 5.0) -> None:
    """POST ``payload`` as JSON to ``url``.

    Raises:
        AlertDeliveryError: the URL is not http(s), the server answered other than 2xx, or
            the network failed (refused, timed out); the message names the URL and the cause.
    """
    if urlsplit(url).scheme not in ("http", "https"):
        raise AlertDeliveryError(f"alert webhook {url!r} is not an http(s) URL")
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        body = exc.read(500).decode(errors="replace")
        raise AlertDeliveryError(
            f"alert webhook {url} answered HTTP {exc.code}: {body or exc.reason}"
        ) from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AlertDeliveryError(f"alert webhook {url} unreachable: {reason}") from exc
    if not 200 <= status < 300:
        raise AlertDeliveryError(f"alert webhook {url} answered HTTP {status}")


def append_alert_log(
    path: Path, payload: dict[str, object], now: datetime, *, delivery: str | None = None
) -> None:
    """Append one JSON line ``{"at", "delivery", "payload"}`` to ``path`` (the demo's alert log).

    Args:
        delivery: what happened to the webhook post (``"sent"``, ``"failed: ..."``), or
            ``None`` when there is no webhook.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"at": now.isoformat(), "delivery": delivery, "payload": payload})
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def deliver(
    book: AlertBook,
    outcome: CheckOutcome,
    *,
    webhook_url: str | None,
    log_path: Path | None,
    now: datetime,
) -> AlertDecision:
    """Decide on ``outcome``; if it warrants an alert, post and log it, then record it as sent.

    The log line is written whether or not the webhook accepted the alert (with what
    happened), so the local alert log shows every attempt. The book is updated only after a
    successful post: a failed one is decided and tried again on the next evaluation.

    Returns:
        The decision (``SUPPRESS`` when nothing was sent).

    Raises:
        AlertDeliveryError: the webhook refused the alert or could not be reached; its
            ``decision`` is the undelivered decision.
    """
    decision = book.decide(outcome, now)
    if decision is AlertDecision.SUPPRESS:
        return decision
    payload = slack_payload(outcome, decision, book.last(outcome.check))
    failure: AlertDeliveryError | None = None
    if webhook_url is not None:
        try:
            post_alert(webhook_url, payload)
        except AlertDeliveryError as exc:
            failure = AlertDeliveryError(str(exc), decision)
    if log_path is not None:
        status = (
            None if webhook_url is None else ("sent" if failure is None else f"failed: {failure}")
        )
        append_alert_log(log_path, payload, now, delivery=status)
    if failure is not None:
        log.warning("alert not delivered", check=outcome.check, decision=decision.value,
                    error=str(failure))  # fmt: skip
        raise failure
    book.record_sent(outcome, now)
    return decision
