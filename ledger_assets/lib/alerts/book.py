"""What to alert on: one record per check of the last alert sent, kept in a JSON file.

The book remembers only alerts that were *delivered* (:meth:`AlertBook.record_sent`), never
mere evaluations. So a failed delivery leaves the book as it was and the next evaluation
decides the same alert again (a retry), and a failure nobody was told about needs no recovery
message when it clears.

Decisions for one check, given the last alert delivered for it:

* pass, after a failure alert         -> ``SEND_RECOVERY``
* pass, after a recovery or nothing   -> ``SUPPRESS`` (passes after passes are silent)
* failure, after a recovery or nothing -> ``SEND_FAILURE``
* failure, other fingerprint than the last failure alert -> ``SEND_FAILURE`` (a new failure)
* failure, same fingerprint           -> ``SUPPRESS``, or ``SEND_FAILURE`` as a reminder once
  ``repeat_after`` has passed since that alert (default: never)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

from ledger_assets.lib.cdc.changelog import atomic_write_bytes

_FORMAT_VERSION = 1
#: Findings remembered per check (as digests) to tell new ones next time; a check failing on
#: more partitions than this reports the rest as new, which errs towards saying more.
MAX_REMEMBERED_FINDINGS = 10_000


@dataclass(frozen=True)
class CheckOutcome:
    """One evaluation of one check.

    Attributes:
        check: the check's stable name, e.g. ``"lake/stripe_charges:reconciles_with_postgres"``.
        passed: whether it passed.
        run_id: the run that evaluated it.
        summary: one line.
        findings: drill-down lines (tenant, day, currency, both totals, keys).
        fingerprint: stable identity of the failure: the same failure seen again has the
            same fingerprint, a different one (e.g. another partition also mismatching) not.
        url: link to the run in the Dagster UI.
    """

    check: str
    passed: bool
    run_id: str
    summary: str
    findings: tuple[str, ...]
    fingerprint: str
    url: str | None = None


class AlertDecision(Enum):
    SEND_FAILURE = "send_failure"
    SEND_RECOVERY = "send_recovery"
    SUPPRESS = "suppress"


def finding_digest(line: str) -> str:
    """A short stable digest of one drill-down line (the book keeps these, not the lines)."""
    return hashlib.sha256(line.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class AlertRecord:
    """The last alert delivered for one check.

    Attributes:
        passed: ``True`` for a recovery alert, ``False`` for a failure alert.
        fingerprint: the outcome's fingerprint.
        run_id: the run that alert reported.
        sent_at: when it was delivered.
        failing_since: when the first failure alert of the current failure streak was sent
            (``None`` after a recovery).
        finding_digests: digests of its findings, to tell which findings are new next time.
    """

    passed: bool
    fingerprint: str
    run_id: str
    sent_at: datetime
    failing_since: datetime | None
    finding_digests: frozenset[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "fingerprint": self.fingerprint,
            "run_id": self.run_id,
            "sent_at": self.sent_at.isoformat(),
            "failing_since": None if self.failing_since is None else self.failing_since.isoformat(),
            "finding_digests": sorted(self.finding_digests),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AlertRecord:
        since = data["failing_since"]
        return cls(
            passed=bool(data["passed"]),
            fingerprint=str(data["fingerprint"]),
            run_id=str(data["run_id"]),
            sent_at=datetime.fromisoformat(data["sent_at"]),
            failing_since=None if since is None else datetime.fromisoformat(since),
            finding_digests=frozenset(data["finding_digests"]),
        )


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be a timezone-aware instant, got {now!r}")


class AlertBook:
    """Persistent alert state: a JSON file (replaced atomically), one entry per check.

    The file is read on every call and rewritten whole on every :meth:`record_sent`, so
    several books (e.g. one per sensor tick) on the same file see each other's entries; it
    holds one small entry per check.
    """

    def __init__(self, path: Path, repeat_after: timedelta | None = None) -> None:
        if repeat_after is not None and repeat_after <= timedelta(0):
            raise ValueError(f"repeat_after must be positive, got {repeat_after}")
        self.path = path
        self.repeat_after = repeat_after

    def _load(self) -> dict[str, AlertRecord]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_bytes())
            if data.get("version") != _FORMAT_VERSION:
                raise ValueError(f"unknown format version {data.get('version')!r}")
            return {name: AlertRecord.from_json(e) for name, e in data["checks"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # Writes are atomic, so this is not a torn write: refuse rather than forget state
            # and re-alert every open failure.
            raise ValueError(f"alert book {self.path} is unreadable: {exc}") from exc

    def last(self, check: str) -> AlertRecord | None:
        """The last alert delivered for ``check``, if any."""
        return self._load().get(check)

    def decide(self, outcome: CheckOutcome, now: datetime) -> AlertDecision:
        """Whether ``outcome`` warrants an alert (see the module docstring)."""
        _require_aware(now)
        last = self.last(outcome.check)
        if outcome.passed:
            failing = last is not None and not last.passed
            return AlertDecision.SEND_RECOVERY if failing else AlertDecision.SUPPRESS
        if last is None or last.passed or last.fingerprint != outcome.fingerprint:
            return AlertDecision.SEND_FAILURE
        if self.repeat_after is not None and now - last.sent_at >= self.repeat_after:
            return AlertDecision.SEND_FAILURE
        return AlertDecision.SUPPRESS

    def record_sent(self, outcome: CheckOutcome, now: datetime) -> None:
        """Remember that the alert for ``outcome`` was delivered at ``now``."""
        _require_aware(now)
        records = self._load()
        last = records.get(outcome.check)
        if outcome.passed:
            since = None
        elif last is not None and not last.passed:
            since = last.failing_since
        else:
            since = now
        records[outcome.check] = AlertRecord(
            passed=outcome.passed,
            fingerprint=outcome.fingerprint,
            run_id=outcome.run_id,
            sent_at=now,
            failing_since=since,
            finding_digests=frozenset(
                finding_digest(f) for f in outcome.findings[:MAX_REMEMBERED_FINDINGS]
            ),
        )
        payload = {
            "version": _FORMAT_VERSION,
            "checks": {name: r.to_json() for name, r in sorted(records.items())},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, json.dumps(payload, indent=1).encode())
