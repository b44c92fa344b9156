"""The incremental cycle's small state file, and how a cycle picks its partitions.

``<state dir>/reconciliation/incremental.json`` holds the watermark the last incremental cycle
was pinned to, the rolling sweep's cursor and first day, and the partitions to look at again
(in flight last time, or failed). It is replaced atomically; a lost file only means the next
cycle starts the sweep over and compares no change-log partitions that one time.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from ledger_assets.lib.cdc.changelog import atomic_write_bytes
from ledger_assets.lib.lake.layout import LakeLayout

STATE_FILE = Path("reconciliation") / "incremental.json"

Partition = tuple[str, int, date]


@dataclass
class IncrementalState:
    last_watermark: str | None = None
    sweep_cursor: int = 0
    first_day: date | None = None
    #: Deferred or mismatched partitions of earlier cycles, compared again next time.
    pending: set[Partition] = field(default_factory=set)


def state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def read_incremental_state(state_dir: Path) -> IncrementalState | None:
    path = state_path(state_dir)
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    first = raw.get("first_day")
    return IncrementalState(
        last_watermark=raw.get("last_watermark"),
        sweep_cursor=int(raw.get("sweep_cursor", 0)),
        first_day=None if first is None else date.fromisoformat(first),
        pending={(str(t), int(n), date.fromisoformat(d)) for t, n, d in raw.get("pending", [])},
    )


def write_incremental_state(state_dir: Path, state: IncrementalState) -> None:
    path = state_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "last_watermark": state.last_watermark,
        "sweep_cursor": state.sweep_cursor,
        "first_day": None if state.first_day is None else state.first_day.isoformat(),
        "pending": sorted([t, n, d.isoformat()] for t, n, d in state.pending),
    }
    atomic_write_bytes(path, json.dumps(payload, sort_keys=True).encode())


def lake_days(layout: LakeLayout, tables: list[str]) -> list[date]:
    """Days that have a base or overlay file in any of ``tables`` (from file names only)."""
    days: set[date] = set()
    for table in tables:
        for path in layout.base_files(table):
            days.add(date.fromisoformat(path.parent.name.removeprefix("local_date=")))
        days.update(k.local_date for k in layout.overlay_keys(table))
    return sorted(days)


def sweep_slice(
    state: IncrementalState, known_days: list[date], cycles: int, today: date | None = None
) -> list[date]:
    """The next slice of the rolling sweep; advances ``state``.

    The sweep walks every calendar day from the earliest day ever seen (kept in the state, so a
    deleted oldest file is still swept) to tomorrow (UTC+14 tenants), ``ceil(days / cycles)``
    days per cycle, so the whole range is covered every ``cycles`` cycles.
    """
    now = today or datetime.now(UTC).date()
    first_candidates = [d for d in (state.first_day, known_days[0] if known_days else None) if d]
    first = min(first_candidates, default=now)
    last = max([now + timedelta(days=1), *known_days[-1:]])
    total = (last - first).days + 1
    per_cycle = max(1, math.ceil(total / max(1, cycles)))
    start = state.sweep_cursor % total
    days = [first + timedelta(days=(start + i) % total) for i in range(min(per_cycle, total))]
    state.first_day = first
    state.sweep_cursor = (start + per_cycle) % total
    return days
