"""Records that failed validation or lack a parent: kept with their reason, never dropped.

A quarantined record is one row, deduplicated by the hash of its payload, so the same bad
record delivered twice is one row with ``attempts = 2``. A record that only waits for its
parent (a dispute whose charge has not arrived) names that key in ``awaiting_key``; when the
parent lands, :func:`waiting_on` hands those records back for another try.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb


@dataclass(frozen=True)
class Rejection:
    """A record that could not be written, and why."""

    source: str
    entity: str
    record_key: str | None
    reason: str
    payload: dict[str, Any]
    tenant_id: int | None = None
    awaiting_key: str | None = None


def payload_hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def quarantine(
    conn: psycopg.Connection[tuple[object, ...]], rejections: Iterable[Rejection]
) -> int:
    """Record rejections (idempotently); returns how many were given."""
    rows = [
        (
            r.tenant_id, r.source, r.entity, r.record_key, r.reason,
            Jsonb(r.payload), payload_hash(r.payload), r.awaiting_key,
        )
        for r in rejections
    ]  # fmt: skip
    if not rows:
        return 0
    with conn.cursor() as cur:
        cur.executemany(
            """
            insert into ledger.quarantine
                (tenant_id, source, entity, record_key, reason, payload, payload_sha256,
                 awaiting_key)
            values (%s, %s, %s, %s, %s, %s, %s, %s)
            on conflict (source, entity, payload_sha256) do update
                set attempts = ledger.quarantine.attempts + 1,
                    last_seen_at = now(),
                    reason = excluded.reason,
                    resolved_at = null,
                    resolution = null
            """,
            rows,
        )
    return len(rows)


def waiting_on(
    conn: psycopg.Connection[tuple[object, ...]], keys: Iterable[str]
) -> list[tuple[int, str, dict[str, Any]]]:
    """Unresolved records waiting on any of ``keys``: (quarantine_id, entity, payload)."""
    wanted = list(set(keys))
    if not wanted:
        return []
    rows = conn.execute(
        """
        select quarantine_id, entity, payload from ledger.quarantine
        where awaiting_key = any(%s) and resolved_at is null
        order by quarantine_id
        """,
        (wanted,),
    ).fetchall()
    return [(int(str(q)), str(e), dict(p)) for q, e, p in rows]  # type: ignore[call-overload]


def resolve(
    conn: psycopg.Connection[tuple[object, ...]], quarantine_ids: Iterable[int], resolution: str
) -> None:
    conn.execute(
        "update ledger.quarantine set resolved_at = now(), resolution = %s "
        "where quarantine_id = any(%s)",
        (resolution, list(quarantine_ids)),
    )
