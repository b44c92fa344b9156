"""Alerts against a real HTTP receiver: one per new failure, one recovery, no floods."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ledger_assets.lib.alerts import (
    AlertBook,
    AlertDecision,
    AlertDeliveryError,
    CheckOutcome,
    deliver,
    post_alert,
    slack_payload,
)
from ledger_assets.lib.sor.pgcluster import find_free_port
from tests.http_server import serve

CHECK = "lake:reconciliation"
T0 = datetime(2025, 4, 16, 9, 30, tzinfo=UTC)
CYCLE = timedelta(minutes=15)


@dataclass
class Receiver:
    url: str
    posts: list[dict[str, Any]] = field(default_factory=list)
    #: Status codes to answer with, one per request, before going back to 200.
    failures: list[int] = field(default_factory=list)

    def texts(self) -> list[str]:
        return [str(p["text"]) for p in self.posts]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver("")

    async def hook(request: Request) -> JSONResponse:
        body = await request.json()
        if state.failures:
            return JSONResponse({"error": "receiver down"}, status_code=state.failures.pop(0))
        state.posts.append(body)
        return JSONResponse({"ok": True})

    with serve(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as url:
        state.url = f"{url}/hook"
        yield state


def failing(*partitions: str, run: str = "run-1") -> CheckOutcome:
    findings = tuple(
        f"tenant 7 · {p} · USD · pg amount 120000 vs lake 119999 · keys: txn_{p}"
        for p in partitions
    )
    return CheckOutcome(
        check=CHECK, passed=False, run_id=run,
        summary=f"{len(partitions)} partition(s) mismatch", findings=findings,
        fingerprint="|".join(sorted(partitions)), url=f"http://dagster.local/runs/{run}",
    )  # fmt: skip


def passing(run: str = "run-ok") -> CheckOutcome:
    return CheckOutcome(CHECK, True, run, "all partitions reconcile", (), "")


def test_one_alert_per_new_failure_then_one_recovery(receiver: Receiver, tmp_path: Path) -> None:
    book = AlertBook(tmp_path / "alerts.json")
    log = tmp_path / "alerts.jsonl"

    def send(outcome: CheckOutcome, cycle: int) -> AlertDecision:
        return deliver(
            book, outcome, webhook_url=receiver.url, log_path=log, now=T0 + cycle * CYCLE
        )

    assert send(passing(), 0) is AlertDecision.SUPPRESS  # a pass with no history says nothing
    assert send(failing("2025-04-14", run="run-1"), 1) is AlertDecision.SEND_FAILURE
    assert len(receiver.posts) == 1
    first = json.dumps(receiver.posts[0])
    assert "FAILED lake:reconciliation" in first
    assert "pg amount 120000 vs lake 119999" in first
    assert "txn_2025-04-14" in first
    assert "http://dagster.local/runs/run-1" in first

    for cycle in (2, 3, 4):  # the same failure again: suppressed
        assert send(failing("2025-04-14", run=f"run-{cycle}"), cycle) is AlertDecision.SUPPRESS
    assert len(receiver.posts) == 1

    assert send(failing("2025-04-14", "2025-04-15", run="run-5"), 5) is AlertDecision.SEND_FAILURE
    assert len(receiver.posts) == 2
    changed = receiver.posts[1]
    assert "STILL FAILING lake:reconciliation since 2025-04-16 09:45 UTC, now also 1 new" in str(
        changed["text"]
    )
    blocks = changed["blocks"]
    fenced = [b for b in blocks if b["type"] == "section" and "```" in b["text"]["text"]]
    lines = fenced[0]["text"]["text"].splitlines()
    assert lines[1].startswith("+ ")
    assert "txn_2025-04-15" in lines[1]
    assert lines[2].startswith("  ")
    assert "txn_2025-04-14" in lines[2]

    assert send(failing("2025-04-14", "2025-04-15", run="run-6"), 6) is AlertDecision.SUPPRESS
    assert send(passing("run-7"), 7) is AlertDecision.SEND_RECOVERY
    assert len(receiver.posts) == 3
    assert (
        "RECOVERED lake:reconciliation: passes again (failing since 2025-04-16 09:45 UTC)"
        in str(receiver.posts[2]["text"])
    )
    for cycle in (8, 9, 10):
        assert send(passing(f"run-{cycle}"), cycle) is AlertDecision.SUPPRESS
    assert len(receiver.posts) == 3

    # The local log got exactly the three alerts, as JSON lines, each marked as sent.
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["payload"] for e in entries] == receiver.posts
    assert [e["delivery"] for e in entries] == ["sent"] * 3
    assert entries[0]["at"] == (T0 + CYCLE).isoformat()


def test_receiver_error_is_raised_and_retried(receiver: Receiver, tmp_path: Path) -> None:
    book = AlertBook(tmp_path / "alerts.json")
    log = tmp_path / "alerts.jsonl"
    receiver.failures = [500]
    with pytest.raises(AlertDeliveryError, match="HTTP 500") as error:
        deliver(book, failing("2025-04-14"), webhook_url=receiver.url, log_path=log, now=T0)
    assert error.value.decision is AlertDecision.SEND_FAILURE
    assert receiver.posts == []
    assert book.last(CHECK) is None  # not marked as sent
    # The next evaluation decides the same alert again and delivers it.
    decision = deliver(
        book, failing("2025-04-14", run="run-2"), webhook_url=receiver.url, log_path=log,
        now=T0 + CYCLE,
    )  # fmt: skip
    assert decision is AlertDecision.SEND_FAILURE
    assert len(receiver.posts) == 1
    deliveries = [json.loads(line)["delivery"] for line in log.read_text().splitlines()]
    assert deliveries[0].startswith("failed: alert webhook")
    assert "HTTP 500" in deliveries[0]
    assert deliveries[1] == "sent"


def test_unreachable_webhook_is_a_clear_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{find_free_port()}/hook"
    with pytest.raises(AlertDeliveryError, match="unreachable"):
        post_alert(url, {"text": "x"}, timeout=2)
    with pytest.raises(AlertDeliveryError, match="not an http"):
        post_alert("file:///etc/passwd", {"text": "x"})


def test_state_survives_a_new_book(receiver: Receiver, tmp_path: Path) -> None:
    path = tmp_path / "state" / "alerts.json"
    deliver(AlertBook(path), failing("2025-04-14"), webhook_url=receiver.url, log_path=None, now=T0)
    fresh = AlertBook(path)
    assert fresh.decide(failing("2025-04-14", run="run-2"), T0 + CYCLE) is AlertDecision.SUPPRESS
    assert fresh.decide(passing(), T0 + CYCLE) is AlertDecision.SEND_RECOVERY
    # Another check's entry written through another book is kept, not clobbered.
    other = CheckOutcome("lake/stripe_charges:identities", False, "r", "net != amount - fee",
                         ("ch_1",), "ch_1")  # fmt: skip
    AlertBook(path).record_sent(other, T0)
    assert AlertBook(path).last(CHECK) is not None
    assert AlertBook(path).last(other.check) is not None
    assert len(receiver.posts) == 1


def test_reminder_after_repeat_after(tmp_path: Path) -> None:
    book = AlertBook(tmp_path / "alerts.json", repeat_after=timedelta(hours=4))
    outcome = failing("2025-04-14")
    assert deliver(book, outcome, webhook_url=None, log_path=None, now=T0) is (
        AlertDecision.SEND_FAILURE
    )
    assert book.decide(outcome, T0 + timedelta(hours=3, minutes=59)) is AlertDecision.SUPPRESS
    assert book.decide(outcome, T0 + timedelta(hours=4)) is AlertDecision.SEND_FAILURE
    text = str(slack_payload(outcome, AlertDecision.SEND_FAILURE, book.last(CHECK))["text"])
    assert text.startswith("STILL FAILING lake:reconciliation since 2025-04-16 09:30 UTC (reminder")


def test_huge_drill_down_is_truncated_within_slack_limits(receiver: Receiver) -> None:
    partitions = [f"2025-{m:02d}-{d:02d}" for m in range(1, 13) for d in range(1, 29)]
    outcome = failing(*partitions)
    outcome = CheckOutcome(
        outcome.check, False, outcome.run_id, "x" * 10_000,
        (*outcome.findings, "y" * 50_000), outcome.fingerprint, outcome.url,
    )  # fmt: skip
    payload = slack_payload(outcome, AlertDecision.SEND_FAILURE)
    blocks = payload["blocks"]
    assert isinstance(blocks, list)
    assert len(blocks) <= 50
    assert len(blocks[0]["text"]["text"]) <= 150
    texts = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert all(len(t) <= 3000 for t in texts)
    assert sum(len(t) for t in texts) <= 12_000  # Slack's total (msg_blocks_too_long ~13k)
    assert len(str(payload["text"])) <= 3000
    shown = sum(t.count("txn_2025") for t in texts)
    assert 0 < shown < len(partitions)
    assert f"... and {len(partitions) + 1 - shown} more" in texts[-1]
    assert f"txn_{partitions[0]}" in texts[1]  # the drill-down starts with the first finding
    post_alert(receiver.url, payload)
    assert receiver.posts == [payload]


def test_suppress_has_no_message_and_naive_times_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="suppressed"):
        slack_payload(passing(), AlertDecision.SUPPRESS)
    with pytest.raises(ValueError, match="timezone-aware"):
        AlertBook(tmp_path / "a.json").decide(passing(), datetime(2025, 4, 16, 9, 30))
