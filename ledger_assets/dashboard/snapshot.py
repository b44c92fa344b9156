"""The marts snapshot the dashboard reads, resolved from the exporter's ``CURRENT`` pointer.

``lib.marts.export`` publishes each build as ``snapshots/<stamp>/<mart>.parquet`` and then
replaces ``CURRENT`` atomically (temporary file + rename). Resolving is one ``stat`` of the
pointer: the file is re-read only when its inode or mtime changed, so the version endpoint the
browsers poll costs a syscall, not a read. A request resolves the snapshot once and reads every
mart from that folder, so one response never mixes two builds.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ledger_assets.lib.marts.export import POINTER, SNAPSHOTS


class NoSnapshotError(Exception):
    """No marts snapshot has been published yet (503)."""


@dataclass(frozen=True)
class Snapshot:
    #: The snapshot folder's name (a UTC stamp): the cache and ETag version.
    version: str
    folder: Path
    #: The lake's replication watermark (an LSN, ``X/Y``) the marts were built from.
    source_lsn: str | None
    published_at: datetime
    rows: dict[str, int]

    def mart(self, name: str) -> Path:
        return self.folder / f"{name}.parquet"


class SnapshotSource:
    """Resolves ``<root>/CURRENT``, caching the parsed pointer by the file's identity."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._key: tuple[int, int, int] | None = None
        self._snapshot: Snapshot | None = None

    def current(self) -> Snapshot:
        pointer = self.root / POINTER
        try:
            st = os.stat(pointer)
        except FileNotFoundError as exc:
            raise NoSnapshotError(f"no marts snapshot published under {self.root}") from exc
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if key != self._key or self._snapshot is None:
                data = json.loads(pointer.read_text())
                stamp = str(data["snapshot"])
                self._snapshot = Snapshot(
                    version=stamp,
                    folder=self.root / SNAPSHOTS / stamp,
                    source_lsn=data.get("source_lsn"),
                    published_at=datetime.fromisoformat(str(data["published_at"])),
                    rows={str(k): int(v) for k, v in dict(data.get("rows") or {}).items()},
                )
                self._key = key
            return self._snapshot
