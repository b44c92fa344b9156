"""Signed webhook delivery, deliberately imperfect the way the real providers are.

Stripe and Plaid both warn that webhooks can arrive more than once, out of order and late.
Delivery number ``n`` draws from ``default_rng([seed, DELIVERY_STREAM, n])`` whether it is
duplicated (the same body again a little later), delayed (and therefore overtaken by the
deliveries after it), or sent at once; so the same seed gives the same pattern of
imperfections. A receiver that answers non-2xx (or cannot be reached) is retried a few times
with back-off, re-signed each time as the providers do.

Signatures: Stripe's ``Stripe-Signature`` comes from the SDK's own
``WebhookSignature.generate_signature_header``; Plaid's ``Plaid-Verification`` is an ES256 JWT
(header ``kid``; claims ``iat`` and ``request_body_sha256`` of the exact bytes sent) made with
the stand-in's P-256 key, whose public half ``/webhook_verification_key/get`` serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
import numpy as np
import stripe
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

log = logging.getLogger(__name__)

DELIVERY_STREAM = 7_000_002
#: Attempts per delivery and the back-off before each retry (seconds).
RETRY_DELAYS_S = (1.0, 2.0, 4.0)
_TIMEOUT_S = 10.0

Signer = Callable[[bytes], dict[str, str]]


@dataclass(frozen=True)
class DeliveryPolicy:
    """How imperfect delivery is (shares of deliveries) and the seed of its choices."""

    seed: int = 0
    duplicate_share: float = 0.1
    delay_share: float = 0.15
    max_delay_s: float = 4.0


class PlaidSigningKey:
    """The stand-in's webhook key pair, derived from the seed so runs are reproducible.

    Args:
        seed: the stand-in's seed.
        created_at: the key's ``created_at`` (Unix seconds).
    """

    def __init__(self, seed: int, created_at: int = 1_700_000_000) -> None:
        digest = hashlib.sha256(f"plaid-standin-webhook-key:{seed}".encode()).digest()
        # Any integer in [1, n) is a valid P-256 private scalar; the digest is far below n.
        self._private = ec.derive_private_key(
            int.from_bytes(digest[:31], "big") + 1, ec.SECP256R1()
        )
        self.kid = f"standin-{hashlib.sha256(digest).hexdigest()[:16]}"
        self.created_at = created_at

    def jwk(self) -> dict[str, Any]:
        """The public key as Plaid's ``/webhook_verification_key/get`` returns it."""
        public: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(self._private.public_key()))
        return {
            "alg": "ES256",
            "created_at": self.created_at,
            "crv": public["crv"],
            "expired_at": None,
            "kid": self.kid,
            "kty": public["kty"],
            "use": "sig",
            "x": public["x"],
            "y": public["y"],
        }

    def headers(self, body: bytes) -> dict[str, str]:
        """``Plaid-Verification`` for ``body``, issued now."""
        claims = {"iat": int(time.time()), "request_body_sha256": hashlib.sha256(body).hexdigest()}
        token = jwt.encode(claims, self._private, algorithm="ES256", headers={"kid": self.kid})
        return {"Plaid-Verification": token, "Content-Type": "application/json"}


def stripe_signer(secret: str) -> Signer:
    """Headers of a Stripe webhook delivery signed now with the endpoint ``secret``."""

    def sign(body: bytes) -> dict[str, str]:
        header = stripe.WebhookSignature.generate_signature_header(body.decode("utf-8"), secret)
        return {
            "Stripe-Signature": header,
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        }

    return sign


@dataclass(frozen=True)
class Delivery:
    """One POST that was attempted: what, where, when, and the receiver's answer."""

    sequence: int
    url: str
    body: bytes
    attempt: int
    status: int | None
    at: float


@dataclass(order=True)
class _Due:
    at: float
    order: int
    sequence: int = field(compare=False)
    url: str = field(compare=False)
    body: bytes = field(compare=False)
    sign: Signer = field(compare=False)
    attempt: int = field(compare=False, default=1)


class Deliverer:
    """Schedules and sends webhook POSTs from the server's event loop.

    Args:
        policy: the imperfections and their seed.
    """

    def __init__(self, policy: DeliveryPolicy) -> None:
        self.policy = policy
        self.sent: list[Delivery] = []
        self._queue: list[_Due] = []
        self._submitted = 0
        self._order = 0
        self._wake: asyncio.Event | None = None

    def submit(self, url: str, body: bytes, sign: Signer) -> None:
        """Schedule one webhook; the policy may duplicate or delay it."""
        n = self._submitted
        self._submitted += 1
        rng = np.random.default_rng([self.policy.seed, DELIVERY_STREAM, n])
        now = time.monotonic()
        delay = 0.0
        if rng.random() < self.policy.delay_share:
            delay = float(rng.uniform(0.05, self.policy.max_delay_s))
        self._push(_Due(now + delay, 0, n, url, body, sign))
        if rng.random() < self.policy.duplicate_share:
            self._push(_Due(now + delay + float(rng.uniform(0.05, 2.0)), 0, n, url, body, sign))

    def _push(self, due: _Due) -> None:
        due.order = self._order
        self._order += 1
        heapq.heappush(self._queue, due)
        if self._wake is not None:
            self._wake.set()

    @property
    def pending(self) -> int:
        """Deliveries not yet attempted (or waiting for a retry)."""
        return len(self._queue)

    async def run(self) -> None:
        """Send due deliveries forever (cancel to stop)."""
        self._wake = asyncio.Event()
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = self._queue[0].at - time.monotonic()
            if wait > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)
                continue
            due = heapq.heappop(self._queue)
            status = await asyncio.to_thread(_post, due.url, due.body, due.sign(due.body))
            self.sent.append(
                Delivery(due.sequence, due.url, due.body, due.attempt, status, time.time())
            )
            ok = status is not None and 200 <= status < 300
            if not ok and due.attempt <= len(RETRY_DELAYS_S):
                retry = RETRY_DELAYS_S[due.attempt - 1]
                self._push(
                    _Due(
                        time.monotonic() + retry,
                        0,
                        due.sequence,
                        due.url,
                        due.body,
                        due.sign,
                        due.attempt + 1,
                    )
                )


def _post(url: str, body: bytes, headers: dict[str, str]) -> int | None:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError) as exc:
        log.warning("webhook delivery to %s failed: %s", url, exc)
        return None
