"""Slack-compatible alert messages (``{"text": ..., "blocks": [...]}``), bounded in size.

Slack rejects a message whose section text exceeds 3,000 characters, a header over 150, more
than 50 blocks, or (undocumented, observed near 13,000) too much block text in total; see
https://api.slack.com/reference/block-kit/blocks. The drill-down is therefore packed into at
most :data:`MAX_FINDING_SECTIONS` sections of at most :data:`SECTION_LIMIT` characters and
whatever does not fit is counted ("... and N more"); the complete drill-down stays in the
check's metadata in the Dagster UI, which the message links to.

``text`` carries the same headline, summary and the first findings, so webhooks that ignore
blocks (Mattermost, a plain log) still show the drill-down.
"""

from __future__ import annotations

from ledger_assets.lib.alerts.book import AlertDecision, AlertRecord, CheckOutcome, finding_digest

HEADER_LIMIT = 150
SECTION_LIMIT = 3000
TEXT_LIMIT = 3000
MAX_FINDING_SECTIONS = 3
#: One finding line is cut here: a single enormous line must not crowd out the others.
LINE_LIMIT = 300
_FENCE = "```"
#: Room kept in the last chunk for the "... and N more" line.
_TAIL_RESERVE = 40


def _escape(text: str) -> str:
    """Slack's mrkdwn control characters (https://api.slack.com/reference/surfaces/formatting)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _pack(lines: list[str], limit: int, chunks: int) -> list[str]:
    """``lines`` in at most ``chunks`` texts of at most ``limit`` characters each.

    Lines that do not fit are dropped from the end and counted in a last
    ``"... and N more"`` line.
    """
    packed: list[list[str]] = [[]]
    sizes = [0]
    taken = 0
    for line in lines:
        room = limit - (_TAIL_RESERVE if len(packed) == chunks else 0)
        if sizes[-1] + len(line) + 1 > room:
            if len(packed) == chunks:
                break
            packed.append([])
            sizes.append(0)
        packed[-1].append(line)
        sizes[-1] += len(line) + 1
        taken += 1
    if taken < len(lines):
        packed[-1].append(f"... and {len(lines) - taken} more")
    return ["\n".join(chunk) for chunk in packed if chunk]


def _headline(outcome: CheckOutcome, decision: AlertDecision, previous: AlertRecord | None) -> str:
    if decision is AlertDecision.SEND_RECOVERY:
        since = "" if previous is None or previous.failing_since is None else (
            f" (failing since {previous.failing_since:%Y-%m-%d %H:%M} UTC)"
        )  # fmt: skip
        return f"RECOVERED {outcome.check}: passes again{since}"
    if previous is None or previous.passed:
        return f"FAILED {outcome.check}"
    since = "" if previous.failing_since is None else (
        f" since {previous.failing_since:%Y-%m-%d %H:%M} UTC"
    )  # fmt: skip
    if previous.fingerprint == outcome.fingerprint:
        return f"STILL FAILING {outcome.check}{since} (reminder, unchanged)"
    new = sum(finding_digest(f) not in previous.finding_digests for f in outcome.findings)
    return f"STILL FAILING {outcome.check}{since}, now also {new} new finding(s)"


def _ordered_findings(outcome: CheckOutcome, previous: AlertRecord | None) -> list[str]:
    """Findings, new ones first (marked ``+``) when the failure changed since the last alert."""
    lines = [_cut(f, LINE_LIMIT) for f in outcome.findings]
    if previous is None or previous.passed or previous.fingerprint == outcome.fingerprint:
        return lines
    new = [finding_digest(f) not in previous.finding_digests for f in outcome.findings]
    return [f"+ {line}" for line, is_new in zip(lines, new, strict=True) if is_new] + [
        f"  {line}" for line, is_new in zip(lines, new, strict=True) if not is_new
    ]


def slack_payload(
    outcome: CheckOutcome, decision: AlertDecision, previous: AlertRecord | None = None
) -> dict[str, object]:
    """The message for ``decision`` about ``outcome``.

    Args:
        outcome: the evaluation being reported.
        decision: ``SEND_FAILURE`` or ``SEND_RECOVERY``.
        previous: the last alert delivered for this check (``AlertBook.last``), which turns a
            failure into "still failing, now also ..." and dates a recovery.

    Raises:
        ValueError: ``decision`` is ``SUPPRESS`` (there is nothing to say).
    """
    if decision is AlertDecision.SUPPRESS:
        raise ValueError("a suppressed outcome has no message")
    headline = _headline(outcome, decision, previous)
    findings = [] if outcome.passed else _ordered_findings(outcome, previous)
    link = f" · <{outcome.url}|open the run in Dagster>" if outcome.url else ""
    blocks: list[dict[str, object]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(headline, HEADER_LIMIT)}},
        {"type": "section",
         "text": {"type": "mrkdwn", "text": _cut(_escape(outcome.summary), SECTION_LIMIT)}},
    ]  # fmt: skip
    fenced = SECTION_LIMIT - 2 * len(_FENCE) - 2
    for chunk in _pack([_escape(f) for f in findings], fenced, MAX_FINDING_SECTIONS):
        text = f"{_FENCE}\n{chunk}\n{_FENCE}"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    context = _cut(f"check `{_escape(outcome.check)}` · run `{_escape(outcome.run_id)}`", 2000)
    # A link cannot be cut; one too long to fit is left out (the run id is still there).
    context += link if len(context) + len(link) <= SECTION_LIMIT else ""
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    head = _cut(f"{headline}: {outcome.summary}", TEXT_LIMIT // 3)
    body = _pack(findings, TEXT_LIMIT - len(head) - 1, 1)
    return {"text": "\n".join([head, *body]), "blocks": blocks}
