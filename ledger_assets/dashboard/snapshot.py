"""The marts snapshot the dashboard reads, resolved from the exporter's ``CURRENT`` pointer.

``lib.marts.export`` publishes each build as ``snapshots/<stamp>/<mart>.parquet`` and then
replaces ``CURRENT`` atomically (temporary file + rename). Resolving is one ``stat`` of the
pointer: the file is re-read only when its inode or mtime changed, so the version endpoint the
browsers poll costs a syscall, not a read. A request resolves the snapshot once and reads every
mart from that folder, so one response never mixes two builds.

:class:`SourceTags` holds the snapshot's ``source_tags`` (per tenant and local day, the latest
source position behind that day's numbers; see ``lib.marts.export``) in memory, indexed by
tenant. :meth:`SourceTags.key` digests the tags of a range of days: equal keys in two snapshots
mean that the rows of those days were built from the same source data, so a cached result
keyed by it survives a snapshot that touched other days only.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import pyarrow.parquet as pq

from ledger_assets.lib.marts.export import POINTER, SNAPSHOTS, SOURCE_TAGS


class NoSnapshotError(Exception):
    """No marts snapshot has been published yet (503)."""


class SourceTags:
    """A snapshot's source tags by tenant: sorted days and their positions (integer LSNs)."""

    def __init__(self, by_tenant: dict[int, tuple[list[date], list[int]]]) -> None:
        self._by_tenant = by_tenant

    @classmethod
    def read(cls, path: Path) -> SourceTags:
        table = pq.read_table(path, columns=["tenant_id", "local_date", "source_lsn"])
        by_tenant: dict[int, tuple[list[date], list[int]]] = {}
        rows = zip(
            table.column("tenant_id").to_pylist(),
            table.column("local_date").to_pylist(),
            table.column("source_lsn").to_pylist(),
            strict=True,
        )
        for tenant, day, lsn in sorted(rows):
            days, lsns = by_tenant.setdefault(int(tenant), ([], []))
            days.append(day)
            lsns.append(int(lsn))
        return cls(by_tenant)

    def _range(self, tenant: int, start: date | None, end: date | None) -> tuple[int, int]:
        days, _ = self._by_tenant.get(tenant, ([], []))
        lo = 0 if start is None else bisect.bisect_left(days, start)
        hi = len(days) if end is None else bisect.bisect_right(days, end)
        return lo, hi

    def key(self, tenants: Sequence[int], start: date | None, end: date | None) -> str:
        """A digest of the tags of ``tenants``' days in ``[start, end]`` (None: unbounded)."""
        digest = hashlib.blake2b(digest_size=16)
        for tenant in tenants:
            lo, hi = self._range(tenant, start, end)
            days, lsns = self._by_tenant.get(tenant, ([], []))
            digest.update(f"{tenant}:{lo}:{hi};".encode())
            for day, lsn in zip(days[lo:hi], lsns[lo:hi], strict=True):
                digest.update(f"{day.toordinal()}={lsn},".encode())
        return digest.hexdigest()

    def latest(self, tenants: Sequence[int], start: date | None, end: date | None) -> int | None:
        """The latest source position behind ``tenants``' days in ``[start, end]``."""
        found = [
            max(self._by_tenant[t][1][lo:hi])
            for t in tenants
            if t in self._by_tenant
            for lo, hi in [self._range(t, start, end)]
            if hi > lo
        ]
        return max(found) if found else None


@dataclass(frozen=True)
class Snapshot:
    #: The snapshot folder's name (a UTC stamp): the cache and ETag version.
    version: str
    folder: Path
    #: The lake's replication watermark (an LSN, ``X/Y``) the marts were built from.
    source_lsn: str | None
    published_at: datetime
    rows: dict[str, int]
    _tags: list[SourceTags | None] = field(default_factory=list, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    def mart(self, name: str) -> Path:
        return self.folder / f"{name}.parquet"

    @property
    def tags(self) -> SourceTags | None:
        """The snapshot's source tags, read once; None for a snapshot published without them."""
        with self._lock:
            if not self._tags:
                path = self.mart(SOURCE_TAGS)
                self._tags.append(SourceTags.read(path) if path.exists() else None)
            return self._tags[0]

    def data_key(self, tenants: Sequence[int], start: date | None, end: date | None) -> str:
        """What a result over ``tenants``' days in ``[start, end]`` depends on: the digest of
        their source tags, or the snapshot itself when it has no tags."""
        tags = self.tags
        return f"v:{self.version}" if tags is None else f"t:{tags.key(tenants, start, end)}"


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
