"""The capture's durable state: which slot feeds this change log, and how far it has landed.

``_state.json`` sits in the change-log folder, next to the files it describes, and is replaced
atomically. It records the slot's identity (cluster system identifier, database, slot name,
plugin, the LSN it was created at) so a slot that was dropped and recreated, restored from a
backup or pointed at another cluster is recognised, and the last position that was both landed
and confirmed to the slot. Manifests are the truth about what landed; the state may lag them by
one batch after a crash, which the next start repairs (see capture.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from ledger_assets.lib.cdc.changelog import ColumnSpec, atomic_write_bytes
from ledger_assets.lib.cdc.errors import ChangeLogCorruptError
from ledger_assets.lib.cdc.lsn import Lsn

STATE_FILE: Final = "_state.json"
STATE_FORMAT: Final = "ledger-cdc-state/1"


@dataclass(frozen=True)
class KnownRelation:
    """The last relation version landed for a table: later versions are compared to it."""

    oid: int
    columns: tuple[ColumnSpec, ...]


@dataclass(frozen=True)
class CaptureState:
    format: str
    slot_name: str
    publication: str
    #: ``pg_control_system().system_identifier``: differs on any other cluster.
    system_identifier: str
    database: str
    #: The slot's consistent point when it was created: where this change log starts.
    origin_lsn: str
    created_at: str
    #: End of the last batch that is landed and confirmed to the slot.
    landed_lsn: str
    landed_at: str | None
    #: The slot's restart_lsn when last confirmed. It never moves back on a live slot.
    restart_lsn_seen: str
    relations: dict[str, KnownRelation]

    @property
    def origin(self) -> Lsn:
        return Lsn.parse(self.origin_lsn)

    @property
    def landed(self) -> Lsn:
        return Lsn.parse(self.landed_lsn)

    @property
    def restart_seen(self) -> Lsn:
        return Lsn.parse(self.restart_lsn_seen)

    def advanced(
        self,
        landed: Lsn,
        at: datetime,
        restart_lsn: Lsn,
        relations: dict[str, KnownRelation],
    ) -> CaptureState:
        """The state after a batch ending at ``landed`` was confirmed."""
        return replace(
            self,
            landed_lsn=str(landed),
            landed_at=at.isoformat(),
            restart_lsn_seen=str(restart_lsn),
            relations=relations,
        )

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> CaptureState:
        raw: dict[str, Any] = json.loads(data)
        raw["relations"] = {
            table: KnownRelation(
                oid=rel["oid"], columns=tuple(ColumnSpec(**c) for c in rel["columns"])
            )
            for table, rel in raw["relations"].items()
        }
        return cls(**raw)


def read_state(folder: Path) -> CaptureState | None:
    """The stored state, or None when this change log has never been started.

    Raises:
        ChangeLogCorruptError: when the file exists but cannot be read.
    """
    path = folder / STATE_FILE
    if not path.exists():
        return None
    try:
        state = CaptureState.from_json(path.read_bytes())
        # Validate the LSN fields now rather than at first use.
        _ = (state.origin, state.landed, state.restart_seen)
    except (ValueError, KeyError, TypeError) as exc:
        raise ChangeLogCorruptError(f"capture state {path} is unreadable: {exc}") from exc
    if state.format != STATE_FORMAT:
        raise ChangeLogCorruptError(f"capture state {path} has unknown format {state.format!r}")
    return state


def write_state(folder: Path, state: CaptureState) -> None:
    """Replace the stored state atomically (temp file, fsync, rename, folder fsync)."""
    atomic_write_bytes(folder / STATE_FILE, state.to_json())
