"""Faults injected on demand through ``POST /_control/faults``.

A rule matches requests whose path starts with ``path_prefix`` and fires ``count`` times: it
delays the request by ``delay_s`` (to force client timeouts) and then, if ``status`` is set,
answers with that error instead of the real response. Plaid's
``TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION`` is armed separately (it fires on a given page
of a pagination, see :class:`MutationFault`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class FaultSpecError(ValueError):
    """A control request with an invalid fault rule."""


@dataclass
class Fault:
    """One armed rule.

    Attributes:
        status: the HTTP status to answer with (429 or 5xx), or None to only delay.
        count: how many matching requests it still affects.
        path_prefix: which request paths it matches.
        delay_s: seconds to wait before answering.
        should_retry: the ``Stripe-Should-Retry`` header to send (None: no header).
        retry_after: the ``Retry-After`` header (seconds) to send with a 429.
    """

    status: int | None
    count: int
    path_prefix: str
    delay_s: float = 0.0
    should_retry: bool | None = None
    retry_after: int | None = None

    @classmethod
    def parse(cls, spec: dict[str, Any]) -> Fault:
        """A rule from its JSON form.

        Raises:
            FaultSpecError: unknown keys or values out of range.
        """
        allowed = {"status", "count", "path_prefix", "delay_s", "should_retry", "retry_after"}
        unknown = set(spec) - allowed
        if unknown:
            raise FaultSpecError(
                f"unknown fault keys {sorted(unknown)}; allowed: {sorted(allowed)}"
            )
        status = spec.get("status")
        if status is not None and (not isinstance(status, int) or not 400 <= status <= 599):
            raise FaultSpecError(f"status must be an HTTP error status, got {status!r}")
        count = spec.get("count", 1)
        if not isinstance(count, int) or count < 1:
            raise FaultSpecError(f"count must be a positive integer, got {count!r}")
        delay = spec.get("delay_s", 0.0)
        if not isinstance(delay, int | float) or delay < 0:
            raise FaultSpecError(f"delay_s must be >= 0, got {delay!r}")
        if status is None and not delay:
            raise FaultSpecError("a fault needs a status, a delay_s, or both")
        should_retry = spec.get("should_retry")
        if status == 429 and "should_retry" not in spec:
            # Stripe marks rate-limited requests as safe to retry; the SDK only retries a 429
            # when told so.
            should_retry = True
        retry_after = spec.get("retry_after", 1 if status == 429 else None)
        return cls(
            status,
            count,
            str(spec.get("path_prefix", "/")),
            float(delay),
            should_retry,
            retry_after,
        )


class Faults:
    """The armed rules of one server, consumed in the order they were armed."""

    def __init__(self) -> None:
        self.rules: list[Fault] = []

    def arm(self, fault: Fault) -> None:
        self.rules.append(fault)

    def clear(self) -> None:
        self.rules.clear()

    def take(self, path: str) -> Fault | None:
        """The first rule matching ``path``, with one use consumed."""
        for rule in self.rules:
            if path.startswith(rule.path_prefix):
                rule.count -= 1
                if rule.count == 0:
                    self.rules.remove(rule)
                return rule
        return None


@dataclass
class MutationFault:
    """Fail page ``page`` (1-based) of the next pagination of ``item_id`` (any item if None)."""

    page: int
    item_id: str | None = None
    count: int = 1

    def matches(self, item_id: str, page: int) -> bool:
        return page == self.page and self.item_id in (None, item_id)
