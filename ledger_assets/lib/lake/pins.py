"""Pinned reads: the lake files a long reader lists, held still for as long as it reads them.

A partition's file is replaced in place, under a fixed name (``layout.py``). That is atomic for
one ``open``, but DuckDB opens a file more than once in one query: the footer when it plans the
scan, the row groups when it executes it. A replacement in between makes the query fail
(``TProtocolException: Invalid data``, "Prefetch registered for bytes outside file") or, worse,
read the new file's bytes through the old footer and return a mix of the two versions without
any error. Measured with DuckDB 1.5.5 over four files each replaced every few milliseconds
(ARCHITECTURE.md §6): 2-3% of queries failed and about 1 in 700 returned torn rows, with or
without the Parquet metadata cache. A dbt build reads its lake views for seconds to minutes
while CDC keeps applying, so it hit this in practice (a demo's full build failed with "Invalid
data" in ``source_positions``).

So a reader that outlives a writer's tick reads *pins*: under each table's writer lock
(``compact.table_lock``, held for the listing and linking only, milliseconds) it lists the
table's files and gives each one a second name in a pin set of its own::

    <root>/_pins/<owner>/<set>/<the file's path below the root>

Locally a pin is a hard link: no bytes are copied, and a writer's rename over the original
leaves the pin on the old inode, so the reader keeps the exact file it listed. On S3 a pin is
a server-side copy (CopyObject; ``S3_COPY_THREADS`` at a time). The lock also makes the
listing a consistent cut of the table: a compaction folding overlays into a day's base, or a
snapshot rewriting the table, is either wholly before it or wholly after it.

The owner (the reader's name, e.g. its database) keeps one pin set: creating a new one for an
owner releases its older ones (:meth:`PinSet.release_others`), since an owner's previous views
are gone once it has new ones. Cost: nothing until a pinned file is replaced; then the
replaced content stays on disk until its pin set is released (at most the files one build
listed and CDC rewrote meanwhile). A pin set left by a crashed process is deleted by the next
pin set created for any owner once it is older than ``ABANDONED_AFTER_S``.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date

from ledger_assets.lib.lake.compact import table_lock
from ledger_assets.lib.lake.layout import LakeLayout, PartitionKey
from ledger_assets.lib.lake.reader import LakeFiles, lake_files
from ledger_assets.lib.lake.storage import S3_SCHEME, LakePath

PINS_DIR = "_pins"
#: A pin set this old belongs to a reader that died without releasing it (a full build over
#: years of files takes minutes, not hours).
ABANDONED_AFTER_S = 6 * 3600
#: Concurrent CopyObject requests when pinning on S3.
S3_COPY_THREADS = 16


def owner_name(reader: str) -> str:
    """A folder name for the reader ``reader`` (e.g. a database's path): short and fixed."""
    return hashlib.sha256(reader.encode()).hexdigest()[:16]


@dataclass
class PinSet:
    """One reader's pins: the files it listed, each under a name no writer replaces."""

    layout: LakeLayout
    #: ``<root>/_pins/<owner>/<set>``.
    folder: LakePath
    #: The owner's sets that were there when this one was created (its earlier views').
    earlier: list[str] = field(default_factory=list)
    #: Source path (below the root) -> its pin's URI.
    pinned: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, layout: LakeLayout, reader: str) -> PinSet:
        """A new, empty pin set for ``reader``; also deletes abandoned pin sets of any reader.

        One listing of every pin set serves both: the abandoned ones go now, the owner's
        others when :meth:`release_others` says its new views are in place."""
        pins = layout.path / PINS_DIR
        owner = owner_name(reader)
        cutoff = time.time_ns() - int(ABANDONED_AFTER_S * 1e9)
        earlier = []
        for set_owner, name in {tuple(p.relative_to(pins).split("/", 2)[:2]) for p in pins.files()}:
            if int(name.split("-", 1)[0]) < cutoff:
                (pins / set_owner / name).delete_tree()
            elif set_owner == owner:
                earlier.append(name)
        # Creation time first: what a later create reads the set's age from.
        name = f"{time.time_ns():020d}-{os.getpid()}"
        return cls(layout, pins / owner / name, sorted(earlier))

    def lake_files(
        self,
        table: str,
        days: Collection[date] | None = None,
        versions: Mapping[PartitionKey, LakePath] | None = None,
    ) -> LakeFiles:
        """:func:`~ledger_assets.lib.lake.reader.lake_files` of ``table``, pinned: listed and
        linked under the table's writer lock. A file this set already pinned keeps its first
        pin, so the views of one reader read one version of each file."""
        with table_lock(self.layout, table):
            files = lake_files(self.layout, table, days, versions)
            superseding = self._pin(list(files.superseding.values()))
            return LakeFiles(
                self._pin(files.bases), dict(zip(files.superseding, superseding, strict=True))
            )

    def _pin(self, uris: list[str]) -> list[str]:
        root = self.layout.path
        sources = [_at(root, uri) for uri in uris]
        rels = [source.relative_to(root) for source in sources]
        todo = [
            (rel, source, self.folder / rel)
            for rel, source in zip(rels, sources, strict=True)
            if rel not in self.pinned
        ]
        if root.is_local:
            for _, source, pin in todo:
                source.pin_to(pin)
        else:
            with ThreadPoolExecutor(S3_COPY_THREADS) as pool:
                list(pool.map(lambda job: job[1].pin_to(job[2]), todo))
        for rel, _, pin in todo:
            self.pinned[rel] = pin.uri
        return [self.pinned[rel] for rel in rels]

    def release(self) -> None:
        """Delete this set's pins (its views must no longer be read)."""
        self.folder.delete_tree()

    def release_others(self) -> int:
        """Delete the owner's earlier pin sets (its earlier views are replaced); returns how
        many."""
        for name in self.earlier:
            (self.folder.parent / name).delete_tree()
        return len(self.earlier)


def _at(root: LakePath, uri: str) -> LakePath:
    """The :class:`LakePath` of a URI that ``lake_files`` gave for ``root``."""
    path = uri if root.is_local else uri.removeprefix(S3_SCHEME)
    return LakePath(path, root.fs, root.s3)
