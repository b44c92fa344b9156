"""A column added to a published table reaches the lake; days it did not touch stay as they were.

Issue 4 ("a column added to a published table is handled"): capture follows the added column
(``tests/lib/cdc/test_capture.py``); here the lake takes it: files written before the column
existed read as NULL for it, the rewritten partitions carry it, and the lake still equals
Postgres row for row.
"""

import hashlib
from pathlib import Path
from typing import Any

import psycopg

from ledger_assets.lib.cdc import ChangeCapture
from ledger_assets.lib.lake.sync import apply_landed
from tests.lake.test_sync import assert_lake_equals_postgres, lake  # noqa: F401 (fixture)


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.glob("stripe_charges/**/*.parquet"))
        if "_versions" not in p.parts
    }


def test_added_column_reaches_the_lake(lake: Any) -> None:  # noqa: F811 (fixture)
    dsn, layout, config = lake
    before = _hashes(layout.root)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("alter table ledger.stripe_charges add column risk_score int4")
        conn.execute(
            "update ledger.stripe_charges set risk_score = 42 "
            "where id = (select min(id) from ledger.stripe_charges)"
        )
    with ChangeCapture(config) as capture:
        capture.start()
        capture.run(max_seconds=30)
    result = apply_landed(dsn, layout, config.changelog_dir)
    assert result.changes == 1

    # Every lake table, including the new column, equals Postgres.
    assert_lake_equals_postgres(dsn, layout)
    after = _hashes(layout.root)
    changed = {path for path in before if after.get(path) != before[path]}
    assert len(changed) <= 1, changed  # at most the updated row's day; never the others
