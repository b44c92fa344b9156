"""The marts snapshot the dashboard serves, opened from the exporter's ``CURRENT`` pointer.

``lib.marts.export`` publishes each build as ``snapshots/<stamp>/<mart>.parquet`` and then
replaces ``CURRENT`` atomically (temporary file + rename). :class:`SnapshotSource` watches the
pointer (one ``stat`` per tick), opens a new snapshot (:class:`Snapshot`: tenant directory,
source tags, the marts in memory), warms it, and only then serves it; the first one before the
server accepts connections.

:class:`SourceTags` holds the snapshot's ``source_tags`` (per tenant and local day, the latest
source position behind that day's numbers; see ``lib.marts.export``) in memory, indexed by
tenant. :meth:`SourceTags.key` digests the tags of a range of days: equal keys in two snapshots
mean that the rows of those days were built from the same source data, so a cached result
keyed by it survives a snapshot that touched other days only.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ledger_assets.dashboard.tenants import Tenant
from ledger_assets.lib.lake.reader import sql_string
from ledger_assets.lib.logs import get_logger
from ledger_assets.lib.marts.export import POINTER, SNAPSHOTS, SOURCE_TAGS

log = get_logger(__name__)


class WouldBlock(Exception):  # noqa: N818  (a signal, not an error)
    """Answering needs a query or file I/O: not on the event loop (retry in a worker thread)."""


class NoSnapshotError(Exception):
    """No marts snapshot has been published yet (503)."""


class SourceTags:
    """A snapshot's source tags: days (days since 1970-01-01) and positions (integer LSNs) as
    arrays sorted by tenant and day, with each tenant's slice of them.

    Arrays, not Python lists: reading 220k tags row by row took ~0.5 s and digesting a range
    day by day cost the warm-up ~0.75 s per snapshot; a slice's bytes digest in microseconds."""

    def __init__(
        self, days: np.ndarray, lsns: np.ndarray, spans: dict[int, tuple[int, int]]
    ) -> None:
        self._days = days
        self._lsns = lsns
        self._spans = spans
        # Digests asked for before (every request's ETag needs one; a running balance's covers
        # every day up to its end). Immutable tags: entries never go stale, only many.
        self._keys: dict[tuple[tuple[int, ...], date | None, date | None], str] = {}

    @classmethod
    def read(cls, path: Path) -> SourceTags:
        table = pq.read_table(path, columns=["tenant_id", "local_date", "source_lsn"]).sort_by(
            [("tenant_id", "ascending"), ("local_date", "ascending")]
        )
        tenants = table.column("tenant_id").to_numpy()
        days = table.column("local_date").cast(pa.int32()).to_numpy()
        lsns = table.column("source_lsn").cast(pa.int64()).to_numpy()
        # Where the tenant changes: each tenant's [start, end) in the sorted arrays.
        starts = np.flatnonzero(np.diff(tenants)) + 1
        bounds = [0, *starts.tolist(), len(tenants)]
        spans = {int(tenants[lo]): (lo, hi) for lo, hi in itertools.pairwise(bounds) if hi > lo}
        return cls(days, lsns, spans)

    def _range(self, tenant: int, start: date | None, end: date | None) -> tuple[int, int]:
        first, last = self._spans.get(tenant, (0, 0))
        days = self._days[first:last]
        lo = 0 if start is None else int(np.searchsorted(days, _epoch_day(start), "left"))
        hi = len(days) if end is None else int(np.searchsorted(days, _epoch_day(end), "right"))
        return first + lo, first + max(lo, hi)

    def key(self, tenants: Sequence[int], start: date | None, end: date | None) -> str:
        """A digest of the tags of ``tenants``' days in ``[start, end]`` (None: unbounded)."""
        memo = (tuple(tenants), start, end)
        found = self._keys.get(memo)
        if found is not None:
            return found
        digest = hashlib.blake2b(digest_size=16)
        for tenant in tenants:
            lo, hi = self._range(tenant, start, end)
            digest.update(f"{tenant}:{hi - lo};".encode())
            digest.update(self._days[lo:hi].tobytes())
            digest.update(self._lsns[lo:hi].tobytes())
        if len(self._keys) > 100_000:
            self._keys.clear()
        self._keys[memo] = key = digest.hexdigest()
        return key

    def latest(self, tenants: Sequence[int], start: date | None, end: date | None) -> int | None:
        """The latest source position behind ``tenants``' days in ``[start, end]``."""
        found = [
            int(self._lsns[lo:hi].max())
            for t in tenants
            for lo, hi in [self._range(t, start, end)]
            if hi > lo
        ]
        return max(found) if found else None


_EPOCH = date(1970, 1, 1)


def _epoch_day(day: date) -> int:
    """``day`` as Arrow's date32 holds it: days since 1970-01-01."""
    return (day - _EPOCH).days


class Snapshot:
    """One published snapshot, opened for serving.

    Opening (:meth:`open`) does once what every request would otherwise pay: the tenant
    directory (tenants are not day-partitioned, so the marts do not carry them; a new tenant
    reaches the marts only with a new snapshot, so the directory read with the snapshot is
    exactly as fresh as the marts), the source tags, and one in-memory DuckDB database with a
    table per mart the dashboard reads, ordered by tenant. A query for one tenant then reads the
    few row groups whose zone maps hold it, already decoded, instead of decompressing and
    filtering whole Parquet files (the export does not sort them by tenant): a 30-day query went
    from ~120 ms to ~2 ms on 220k rows (2 loaded cores). The price is memory, about the marts'
    uncompressed size per open snapshot (two during a switch). Queries run on per-thread cursors
    of that connection; every table is this snapshot's, so one response never mixes two builds.
    """

    def __init__(
        self,
        version: str,
        folder: Path,
        source_lsn: str | None,
        published_at: datetime,
        rows: dict[str, int],
        tenants: Mapping[int, Tenant],
    ) -> None:
        #: The snapshot folder's name (a UTC stamp): the cache and ETag version.
        self.version = version
        self.folder = folder
        #: The lake's replication watermark (an LSN, ``X/Y``) the marts were built from.
        self.source_lsn = source_lsn
        self.published_at = published_at
        self.rows = rows
        self.tenants = tenants
        tags = folder / f"{SOURCE_TAGS}.parquet"
        #: None for a snapshot published without source tags.
        self.tags = SourceTags.read(tags) if tags.exists() else None
        self._con = duckdb.connect(":memory:")
        self._loaded: set[str] = set()
        self._cursors = threading.local()
        # Guards the shared connection while cursors are made from it.
        self._con_lock = threading.Lock()
        #: What preparing it took (see SnapshotSource): seconds per step, results warmed.
        self.warmed: dict[str, Any] = {}

    @classmethod
    def open(
        cls,
        root: Path,
        pointer: Mapping[str, Any],
        tenants: Mapping[int, Tenant],
        marts: Sequence[str],
    ) -> Snapshot:
        """The snapshot ``pointer`` names, with ``marts`` loaded into memory."""
        stamp = str(pointer["snapshot"])
        snapshot = cls(
            version=stamp,
            folder=root / SNAPSHOTS / stamp,
            source_lsn=pointer.get("source_lsn"),
            published_at=datetime.fromisoformat(str(pointer["published_at"])),
            rows={str(k): int(v) for k, v in dict(pointer.get("rows") or {}).items()},
            tenants=tenants,
        )
        for mart in marts:
            snapshot._load(mart)
        return snapshot

    def _load(self, mart: str) -> None:
        name = quote_identifier(mart)
        path = self.folder / f"{mart}.parquet"
        by_tenant = "tenant_id" in pq.read_schema(path).names
        # DDL takes no parameters: the name is checked, the path is ours, quoted.
        self._con.execute(
            f"create table {name} as "  # noqa: S608
            f"select * from read_parquet({sql_string(str(path))})"
            + (" order by tenant_id" if by_tenant else "")
        )
        self._loaded.add(mart)

    def query(self, sql: str, params: Sequence[Any]) -> pa.Table:
        """``sql`` over the marts' tables (see :meth:`table`), on this thread's cursor."""
        cursor = getattr(self._cursors, "cursor", None)
        if cursor is None:
            # A cursor is a connection to the same database: one per thread, never shared;
            # made from the shared connection one thread at a time.
            with self._con_lock:
                cursor = self._cursors.cursor = self._con.cursor()
        return cursor.execute(sql, list(params)).to_arrow_table()

    def table(self, mart: str) -> str:
        """The in-memory table of ``mart`` (loaded by :meth:`open`) as an SQL identifier."""
        if mart not in self._loaded:
            raise KeyError(f"mart {mart!r} was not loaded with snapshot {self.version}")
        return quote_identifier(mart)

    def data_key(self, tenants: Sequence[int], start: date | None, end: date | None) -> str:
        """What a result over ``tenants``' days in ``[start, end]`` depends on: the digest of
        their source tags, or the snapshot itself when it has no tags."""
        tags = self.tags
        return f"v:{self.version}" if tags is None else f"t:{tags.key(tenants, start, end)}"


def quote_identifier(name: str) -> str:
    """A plain name (letters, digits, ``_``) as a DuckDB identifier; anything else is refused."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a plain identifier: {name!r}")
    return f'"{name}"'


class SnapshotSource:
    """The snapshot being served, and the switch to a newly published one once it is prepared.

    :meth:`refresh` opens a newly published snapshot (tenant directory, source tags, the marts
    loaded into memory), runs ``warm`` on it (the reader precomputes every tenant's default
    views, bounded in time), and only then makes it the served one: no request ever pays for
    opening a snapshot or for the default views' queries. The app calls it once before its
    server accepts connections, then a watcher thread every ``watch`` interval (one ``stat`` of
    ``CURRENT`` when nothing changed); requests meanwhile keep reading the previous snapshot.
    :meth:`current` is the served snapshot, an attribute read; before the first one is
    published and prepared it raises :class:`NoSnapshotError` (the app answers 503, and its
    readiness endpoint says not ready).
    """

    def __init__(
        self,
        root: Path,
        load_tenants: Callable[[], Mapping[int, Tenant]],
        marts: Sequence[str],
        warm: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self.root = root
        self._load_tenants = load_tenants
        self._marts = tuple(marts)
        self._warm = warm
        self._lock = threading.Lock()
        self._key: tuple[int, int, int] | None = None
        self._served: Snapshot | None = None

    @property
    def served(self) -> Snapshot | None:
        """The snapshot requests read, None before the first one is prepared."""
        return self._served

    def current(self) -> Snapshot:
        served = self._served
        if served is None:
            raise NoSnapshotError(f"no marts snapshot published under {self.root} is ready yet")
        return served

    def refresh(self) -> Snapshot | None:
        """Serve the snapshot ``CURRENT`` names, preparing it first if it is new; the served
        one (None: nothing published yet)."""
        with self._lock:
            pointer = self.root / POINTER
            try:
                st = os.stat(pointer)
            except FileNotFoundError:
                return self._served
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if key == self._key:
                return self._served
            data = json.loads(pointer.read_text())
            served = self._served
            if served is None or str(data["snapshot"]) != served.version:
                self._served = self._prepare(data)
            # Only once prepared: a snapshot that failed to open is tried again next time.
            self._key = key
            return self._served

    def _prepare(self, pointer: Mapping[str, Any]) -> Snapshot:
        started = time.monotonic()
        snapshot = Snapshot.open(self.root, pointer, self._load_tenants(), self._marts)
        opened = time.monotonic()
        if self._warm is not None:
            self._warm(snapshot)
        snapshot.warmed["open_seconds"] = round(opened - started, 3)
        snapshot.warmed["ready_seconds"] = round(time.monotonic() - started, 3)
        log.info("dashboard snapshot served", snapshot=snapshot.version, **snapshot.warmed)
        return snapshot

    def poll(self) -> None:
        """:meth:`refresh`, logging a failure instead of raising it: a snapshot that fails to
        open (e.g. the directory's database is down) is tried again at the next poll while the
        previous one keeps serving."""
        try:
            self.refresh()
        except Exception:  # the watcher must outlive a bad tick
            log.exception("dashboard snapshot refresh failed; retrying")

    def watch(self, interval: float, stop: threading.Event) -> None:
        """:meth:`poll` every ``interval`` seconds until ``stop`` is set."""
        while not stop.wait(interval):
            self.poll()
