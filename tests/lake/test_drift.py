"""File drift: every change to a lake file names the partitions behind it."""

from datetime import date
from pathlib import Path

from ledger_assets.lib.lake.drift import Drift, FileWatch, drift_between, lake_file_stats
from ledger_assets.lib.lake.layout import LakeLayout, PartitionKey
from ledger_assets.lib.lake.storage import LakePath

DAY = date(2025, 3, 9)


def put(path: LakePath, data: bytes) -> None:
    """Write ``data`` in place (not through the store's atomic replace)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def test_changed_added_and_deleted_files_name_their_partitions(tmp_path: Path) -> None:
    layout = LakeLayout(tmp_path / "lake")
    base = layout.base_file("stripe_charges", DAY)
    overlay = layout.overlay_file(PartitionKey("stripe_charges", 7, DAY))
    other = layout.base_file("stripe_refunds", DAY)
    for path in (base, overlay, other):
        put(path, b"v1")
    watch = FileWatch(tmp_path / "state" / "lake_files.json")
    assert watch.load() is None
    tables = ["stripe_charges", "stripe_refunds"]
    first = lake_file_stats(layout, tables)
    watch.save(first)
    assert watch.load() == first
    assert drift_between(first, lake_file_stats(layout, tables)).empty

    put(base, b"v2, longer")  # edited in place
    overlay.unlink()  # deleted
    new_overlay = layout.overlay_file(PartitionKey("stripe_refunds", 3, date(2025, 3, 10)))
    put(new_overlay, b"v1")  # appeared
    drift = drift_between(first, lake_file_stats(layout, tables))
    assert drift == Drift(
        days=frozenset({("stripe_charges", DAY)}),
        partitions=frozenset(
            {("stripe_charges", 7, DAY), ("stripe_refunds", 3, date(2025, 3, 10))}
        ),
    )


def test_a_same_size_rewrite_through_rename_is_seen(tmp_path: Path) -> None:
    layout = LakeLayout(tmp_path / "lake")
    base = layout.base_file("stripe_charges", DAY)
    put(base, b"abcd")
    before = lake_file_stats(layout, ["stripe_charges"])
    replacement = Path(base).with_name("tmp")
    replacement.write_bytes(b"abce")
    replacement.replace(base)
    drift = drift_between(before, lake_file_stats(layout, ["stripe_charges"]))
    assert drift.days == frozenset({("stripe_charges", DAY)})
