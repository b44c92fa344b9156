"""Pinned reads (``lib/lake/pins.py``): a reader's views keep reading the files it listed,
whatever CDC and compaction do to the lake meanwhile."""

from __future__ import annotations

import os
import threading
import time
from datetime import date
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ledger_assets.lib.lake.compact import compact, table_lock
from ledger_assets.lib.lake.layout import LakeLayout, PartitionKey
from ledger_assets.lib.lake.pins import ABANDONED_AFTER_S, PINS_DIR, PinSet, owner_name
from ledger_assets.lib.lake.schema import LakeTable
from ledger_assets.lib.lake.store import read_partitions, write_partition
from ledger_assets.lib.marts.prepare import create_persistent_lake_view
from tests.lake.test_lake import world  # noqa: F401 - the fixture

MAR_9, MAR_10, MAR_11 = date(2024, 3, 9), date(2024, 3, 10), date(2024, 3, 11)


def keep_ids(layout: LakeLayout, lake_table: LakeTable, key: PartitionKey, *ids: str) -> None:
    rows = read_partitions(layout, lake_table, [key])
    kept = rows.filter(pc.is_in(rows.column("id"), pa.array(ids, pa.string())))
    assert write_partition(layout, lake_table, key, kept).changed


def view_over_pins(pins: PinSet, lake_table: LakeTable) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("create schema lake")
    create_persistent_lake_view(con, pins, lake_table, "lake")
    return con


def ids(con: duckdb.DuckDBPyConnection, lake_table: LakeTable) -> list[str]:
    rows = con.execute(f"select id from lake.{lake_table.name} order by id").fetchall()
    return [r[0] for r in rows]


def test_a_pinned_view_reads_the_files_it_listed_after_cdc_and_compaction(world: Any) -> None:  # noqa: F811
    _, layout, lake_table = world
    key = PartitionKey(lake_table.name, 1, MAR_10)
    keep_ids(layout, lake_table, key, "ch_b")  # an overlay: ch_c is gone from March 10
    pins = PinSet.create(layout, "dbt")
    con = view_over_pins(pins, lake_table)
    before = ids(con, lake_table)
    assert before == ["ch_a", "ch_b", "ch_d", "ch_e"]
    overlay = layout.overlay_file(key)
    listed = os.stat(overlay.path).st_ino

    # CDC replaces the overlay in place, then compaction folds it into the base and deletes it.
    keep_ids(layout, lake_table, key)  # March 10 is now empty for tenant 1
    assert os.stat(overlay.path).st_ino != listed
    compact(layout, lake_table, before=MAR_11)
    assert not overlay.exists()
    # The view still reads exactly what it listed; a new pin set sees the lake as it is now.
    assert ids(con, lake_table) == before
    newer = PinSet.create(layout, "dbt")
    assert ids(view_over_pins(newer, lake_table), lake_table) == ["ch_a", "ch_d", "ch_e"]

    # A reader's new pin set releases its earlier ones, and only its own.
    other = PinSet.create(layout, "reproduction")
    view_over_pins(other, lake_table)
    assert newer.release_others() == 1
    assert not pins.folder.files()
    assert newer.folder.files()
    assert other.folder.files()
    # Nothing was copied: a local pin is the same inode as the file it pinned.
    base = layout.base_file(lake_table.name, MAR_9)
    pinned = newer.folder / base.relative_to(layout.path)
    assert os.stat(pinned.path).st_ino == os.stat(base.path).st_ino
    newer.release()
    assert not newer.folder.files()
    assert base.exists()


def test_pinning_waits_for_the_tables_writer(world: Any) -> None:  # noqa: F811
    _, layout, lake_table = world
    pins = PinSet.create(layout, "dbt")
    done = threading.Event()

    def pin() -> None:
        pins.lake_files(lake_table.name)
        done.set()

    with table_lock(layout, lake_table.name):
        reader = threading.Thread(target=pin)
        reader.start()
        # A writer mid-way (a compaction, a snapshot) must not be listed half-done.
        assert not done.wait(0.3)
    assert done.wait(10)
    reader.join()
    assert len(pins.pinned) == 3  # the three day files


def test_pins_of_a_dead_reader_are_deleted_later(world: Any) -> None:  # noqa: F811
    _, layout, lake_table = world
    crashed = PinSet.create(layout, "crashed")
    crashed.lake_files(lake_table.name)
    recent = PinSet.create(layout, "busy")
    recent.lake_files(lake_table.name)
    # The crashed reader's set is older than any build lasts.
    aged = time.time_ns() - int((ABANDONED_AFTER_S + 60) * 1e9)
    old_folder = crashed.folder.parent / f"{aged:020d}-1"
    os.rename(crashed.folder.path, old_folder.path)
    PinSet.create(layout, "someone else")
    pins_root = layout.path / PINS_DIR
    assert not (pins_root / owner_name("crashed")).files()
    assert recent.folder.files()
