"""``create_lake_view(days=...)``: only those days' files, overlays still superseding the base."""

from __future__ import annotations

from datetime import date
from typing import Any

import duckdb
import pyarrow.compute as pc

from ledger_assets.lib.lake.layout import LakeLayout, PartitionKey
from ledger_assets.lib.lake.reader import create_lake_view
from ledger_assets.lib.lake.schema import LakeTable
from ledger_assets.lib.lake.store import read_partitions, write_partition
from tests.lake.test_lake import world  # noqa: F401 - the fixture

MAR_9, MAR_10, MAR_11 = date(2024, 3, 9), date(2024, 3, 10), date(2024, 3, 11)


def counts(
    layout: LakeLayout, lake_table: LakeTable, days: set[date] | None
) -> dict[tuple[int, date], int]:
    con = duckdb.connect()
    view = create_lake_view(con, layout, lake_table, name="v", days=days)
    rows = con.execute(f"select tenant_id, local_date, count(*) from {view} group by all")
    return {(t, d): n for t, d, n in rows.fetchall()}


def test_days_restrict_the_view_to_their_files(world: Any) -> None:  # noqa: F811
    _, layout, lake_table = world
    everything = counts(layout, lake_table, None)
    assert everything == {(1, MAR_9): 1, (1, MAR_10): 2, (2, MAR_10): 1, (2, MAR_11): 1}
    # A day with no file is simply absent.
    assert counts(layout, lake_table, {MAR_10, date(2024, 3, 12)}) == {
        (1, MAR_10): 2,
        (2, MAR_10): 1,
    }
    assert counts(layout, lake_table, set()) == {}

    key = PartitionKey(lake_table.name, 1, MAR_10)
    rows = read_partitions(layout, lake_table, [key])
    write_partition(layout, lake_table, key, rows.filter(pc.equal(rows.column("id"), "ch_b")))
    # The overlay supersedes tenant 1's slice of March 10 only when that day is in scope.
    assert counts(layout, lake_table, {MAR_10}) == {(1, MAR_10): 1, (2, MAR_10): 1}
    assert counts(layout, lake_table, {MAR_9, MAR_11}) == {(1, MAR_9): 1, (2, MAR_11): 1}
    assert counts(layout, lake_table, None) == {
        (1, MAR_9): 1,
        (1, MAR_10): 1,
        (2, MAR_10): 1,
        (2, MAR_11): 1,
    }
