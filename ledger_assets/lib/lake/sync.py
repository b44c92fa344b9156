"""Keep the lake equal to Postgres: seed it from a snapshot, then apply landed change-log batches.

State lives in ``<lake>/_state/lake.json`` (with the lake: on S3 for an S3 lake):

* ``applied_end`` — the change log is applied up to this LSN (the lake's replication watermark);
* ``seeded_lsn`` — a WAL position read after the seeding snapshot finished. Until the watermark
  passes it the lake may show a mix of snapshot rows and replayed older row images, so it counts
  as *seeding* and reconciliation does not judge it.

Seeding order matters: the capture slot is created first (``ChangeCapture.start``), then the
tables are copied. Every change after the slot's start is therefore in the change log; changes
the copy already holds are replayed on top of it harmlessly, because every change carries a
whole row image and the last image per key wins. Applying batches is idempotent the same way,
so a crash between partition writes is repaired by applying the same batches again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pyarrow as pa

from ledger_assets.lib.cdc.capture import CaptureConfig, ChangeCapture
from ledger_assets.lib.cdc.changelog import list_batches, read_changes
from ledger_assets.lib.cdc.lsn import Lsn
from ledger_assets.lib.lake.apply import apply_changes
from ledger_assets.lib.lake.compact import table_lock
from ledger_assets.lib.lake.layout import LakeLayout
from ledger_assets.lib.lake.schema import LakeTable, load_lake_table
from ledger_assets.lib.lake.snapshot import SnapshotReport, snapshot_table
from ledger_assets.lib.lake.storage import LakePath
from ledger_assets.lib.lake.store import PartitionWrite
from ledger_assets.lib.sor.catalog import MIRRORED_TABLES


@dataclass(frozen=True)
class LakeState:
    applied_end: Lsn | None
    seeded_lsn: Lsn | None

    @property
    def seeding(self) -> bool:
        return (
            self.seeded_lsn is None
            or self.applied_end is None
            or self.applied_end < self.seeded_lsn
        )


def _state_path(layout: LakeLayout) -> LakePath:
    return layout.path / "_state" / "lake.json"


def read_lake_state(layout: LakeLayout) -> LakeState:
    path = _state_path(layout)
    if not path.exists():
        return LakeState(None, None)
    raw = json.loads(path.read_text())

    def lsn(value: str | None) -> Lsn | None:
        return None if value is None else Lsn.parse(value)

    return LakeState(lsn(raw.get("applied_end")), lsn(raw.get("seeded_lsn")))


def write_lake_state(layout: LakeLayout, state: LakeState) -> None:
    payload = {
        "applied_end": None if state.applied_end is None else str(state.applied_end),
        "seeded_lsn": None if state.seeded_lsn is None else str(state.seeded_lsn),
    }
    _state_path(layout).write_bytes(json.dumps(payload, sort_keys=True).encode())


def tenant_zones(conn: psycopg.Connection[tuple[object, ...]]) -> dict[int, str]:
    rows = conn.execute("select tenant_id, time_zone from ledger.tenants").fetchall()
    return {int(str(t)): str(z) for t, z in rows}


def lake_tables(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, LakeTable]:
    return {spec.name: load_lake_table(conn, spec) for spec in MIRRORED_TABLES}


def seed_lake(dsn: str, layout: LakeLayout, slot_start: Lsn) -> list[SnapshotReport]:
    """Snapshot every mirrored table; the capture slot must already exist (see module doc).

    Args:
        dsn: the system of record.
        layout: the lake.
        slot_start: the slot's starting position; the change log is replayed from here.
    """
    with psycopg.connect(dsn) as conn:
        zones = tenant_zones(conn)
        tables = lake_tables(conn)
    previous = read_lake_state(layout)
    if previous.applied_end is not None:
        # Snapshots replace the tables' files in place (see snapshot.py): until every table is
        # done the lake is a mix of old and new files, so it counts as seeding from now on.
        write_lake_state(layout, LakeState(previous.applied_end, seeded_lsn=None))
    reports = []
    for lake_table in tables.values():
        with table_lock(layout, lake_table.name):
            reports.append(snapshot_table(dsn, layout, lake_table, zones))
    seeded = max(Lsn.parse(r.consistent_lsn) for r in reports)
    write_lake_state(layout, LakeState(applied_end=slot_start, seeded_lsn=seeded))
    return reports


@dataclass
class ApplyResult:
    batches: int = 0
    changes: int = 0
    start: Lsn | None = None
    end: Lsn | None = None
    writes: dict[str, list[PartitionWrite]] = field(default_factory=dict)
    #: The lake schemas the batches were applied with, by table.
    tables: dict[str, LakeTable] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def partitions_changed(self) -> int:
        return sum(1 for ws in self.writes.values() for w in ws if w.changed)


def apply_landed(
    dsn: str, layout: LakeLayout, changelog_dir: Path, max_batches: int = 50
) -> ApplyResult:
    """Apply every landed batch after the watermark (up to ``max_batches``), then move it.

    Batches must continue the watermark exactly; a gap means change-log data is missing and
    fails closed rather than skipping it.
    """
    started = time.monotonic()
    state = read_lake_state(layout)
    if state.applied_end is None:
        raise RuntimeError("the lake is not seeded: run the lake seed (ledger lake seed) first")
    refs = list_batches(changelog_dir, after=state.applied_end)[:max_batches]
    result = ApplyResult(start=state.applied_end)
    if not refs:
        return result
    manifests = [ref.read() for ref in refs]
    expected = state.applied_end
    for manifest in manifests:
        if manifest.start != expected:
            raise RuntimeError(
                f"change log gap: the lake is applied to {expected} but the next batch starts at "
                f"{manifest.start}; re-snapshot the lake"
            )
        expected = manifest.end
    with psycopg.connect(dsn) as conn:
        zones: Mapping[int, str] = tenant_zones(conn)
        result.tables = lake_tables(conn)
    for name, lake_table in result.tables.items():
        parts = list(read_changes(changelog_dir, manifests, name))
        if not parts:
            continue
        changes = pa.concat_tables(parts, promote_options="default")
        with table_lock(layout, name):
            result.writes[name] = apply_changes(layout, lake_table, zones, changes)
        result.changes += changes.num_rows
    result.batches = len(manifests)
    result.end = manifests[-1].end
    write_lake_state(layout, LakeState(applied_end=result.end, seeded_lsn=state.seeded_lsn))
    result.seconds = time.monotonic() - started
    return result


def build_lake(config: CaptureConfig, layout: LakeLayout, catch_up_seconds: float = 60.0) -> None:
    """Seed a lake from ``config.dsn`` and carry its watermark past the snapshot.

    The steps a fresh deployment takes over several Dagster runs (slot, snapshot, first capture
    and apply), done at once: tests, benchmarks and tools get a lake that is no longer seeding.
    A no-op update to one charge commits a published change after the snapshot, so the
    watermark passes it even when nothing else is being written.
    """
    with ChangeCapture(config) as capture:
        state = capture.start()
    seed_lake(config.dsn, layout, state.origin)
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        conn.execute(
            "update ledger.stripe_charges set description = description "
            "where id = (select min(id) from ledger.stripe_charges)"
        )
    with ChangeCapture(config) as capture:
        capture.start()
        capture.run(max_seconds=catch_up_seconds)
    apply_landed(config.dsn, layout, config.changelog_dir)
    if read_lake_state(layout).seeding:
        raise RuntimeError("the lake is still seeding after its first catch-up")
