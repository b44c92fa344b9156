"""Changes in flight: what the change log says moved after the lake's watermark.

See the package docstring for how these sets pin the comparison. This module only reads the
change log (``cdc.changelog``) and, when asked to, captures it forward (``cdc.capture``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from ledger_assets.lib.cdc import slot as slots
from ledger_assets.lib.cdc.capture import CaptureConfig, ChangeCapture
from ledger_assets.lib.cdc.changelog import Manifest, list_batches, read_changes
from ledger_assets.lib.cdc.errors import CaptureBusyError
from ledger_assets.lib.cdc.lsn import Lsn
from ledger_assets.lib.cdc.state import read_state
from ledger_assets.lib.lake.apply import touched_partitions
from ledger_assets.lib.lake.layout import PartitionKey
from ledger_assets.lib.lake.schema import LakeTable


def landed_end(changelog_dir: Path) -> Lsn | None:
    """How far the change log has landed: its last manifest (the state may lag by a batch)."""
    refs = list_batches(changelog_dir)
    state = read_state(changelog_dir)
    ends = [r.end for r in refs[-1:]] + ([state.landed] if state is not None else [])
    return max(ends) if ends else None


def ensure_captured(config: CaptureConfig, upto: Lsn, timeout: float) -> bool:
    """Make the change log hold every published commit before ``upto``; False on timeout.

    Captures itself when the capture lock is free. When another process holds it, waits for
    the landed position to pass ``upto``; a quiet database lands nothing new (capture skips
    empty reads), so the lock is retried too: once held, a read that finds nothing to land
    while the flushed WAL is already past ``upto`` proves there is nothing before it.
    """
    deadline = time.monotonic() + timeout
    while True:
        landed = landed_end(config.changelog_dir)
        if landed is not None and landed >= upto:
            return True
        try:
            with ChangeCapture(config) as capture:
                capture.start()
                while time.monotonic() < deadline:
                    flushed = slots.current_flush_lsn(capture.conn)
                    result = capture.capture_batch()
                    if result is not None and result.manifest.end >= upto:
                        return True
                    if result is None and flushed >= upto:
                        return True
                    if result is None:
                        # Nothing to read yet: the WAL before ``upto`` is not flushed yet.
                        time.sleep(0.05)
                return False
        except CaptureBusyError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


class ChangeWindow:
    """The change log's changes in batches ending in ``(after, upto]`` (``upto`` None: all).

    Manifests and data files are read once each; :meth:`refresh` picks up batches landed since.
    """

    def __init__(
        self,
        changelog_dir: Path,
        tables: Mapping[str, LakeTable],
        zones: Mapping[int, str],
        after: Lsn,
        upto: Lsn | None = None,
    ) -> None:
        self.changelog_dir = changelog_dir
        self.tables = tables
        self.zones = zones
        self.after = after
        self.upto = upto
        self._manifests: dict[str, Manifest] = {}
        self._changes: dict[str, list[pa.Table]] = {name: [] for name in tables}
        self.refresh()

    def refresh(self) -> None:
        for ref in list_batches(self.changelog_dir, after=self.after):
            if self.upto is not None and ref.end > self.upto:
                break
            if ref.path.stem in self._manifests:
                continue
            manifest = ref.read()
            self._manifests[ref.path.stem] = manifest
            for name in self.tables:
                self._changes[name].extend(read_changes(self.changelog_dir, [manifest], name))

    @property
    def end(self) -> Lsn:
        """The end of the last batch read (``after`` when there is none)."""
        return max((m.end for m in self._manifests.values()), default=self.after)

    def changes(self, table: str) -> pa.Table | None:
        parts = self._changes[table]
        if not parts:
            return None
        return pa.concat_tables(parts, promote_options="default")

    def keys(self, table: str) -> set[str]:
        """Every primary key a change touched: new and old keys (an update may change it)."""
        changes = self.changes(table)
        if changes is None:
            return set()
        pk = self.tables[table].spec.primary_key
        found = set(pc.drop_null(changes.column("key")).cast(pa.string()).to_pylist())
        old = pc.struct_field(changes.column("old"), pk)
        found.update(pc.drop_null(old).cast(pa.string()).to_pylist())
        return found

    def referenced(self, table: str, column: str) -> set[str]:
        """Values of ``column`` in the old and new images of ``table``'s changes."""
        changes = self.changes(table)
        if changes is None:
            return set()
        found: set[str] = set()
        for image in ("old", "new"):
            values = pc.struct_field(changes.column(image), column)
            found.update(pc.drop_null(values).cast(pa.string()).to_pylist())
        return found

    def partitions(self, table: str) -> list[PartitionKey]:
        """The partitions the changes' old and new rows fall into (as the apply computes them)."""
        changes = self.changes(table)
        if changes is None:
            return []
        return touched_partitions(changes, self.tables[table], self.zones)

    def key_count(self) -> int:
        return sum(len(self.keys(name)) for name in self.tables)


def open_snapshot(dsn: str) -> tuple[psycopg.Connection[tuple[object, ...]], Lsn]:
    """A read-only REPEATABLE READ transaction and S, read by its first statement.

    The snapshot is taken when that statement starts and the position is read while it runs,
    so every commit the snapshot sees has a commit record before S.
    """
    conn = psycopg.connect(dsn)
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        row = conn.execute("select pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        return conn, Lsn.parse(str(row[0]))
    except BaseException:
        conn.close()
        raise
