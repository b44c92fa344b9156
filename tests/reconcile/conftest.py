"""A real Postgres, a real lake built through CDC, and helpers to break either behind CDC."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg.conninfo import conninfo_to_dict

from ledger_assets.lib.cdc import CaptureConfig, ChangeCapture
from ledger_assets.lib.cdc import slot as slots
from ledger_assets.lib.lake.layout import LakeLayout
from ledger_assets.lib.lake.sync import apply_landed, build_lake
from ledger_assets.lib.reconcile import ReconcileScope, ReconciliationReport, reconcile
from ledger_assets.lib.synth.load import SeedSpec, seed_database
from tests.conftest import world_searchable_tmpdir

SPEC = SeedSpec(tenants=4, start=date(2025, 2, 1), days=30, target_rows=3_000)
FULL = ReconcileScope("full")
INCREMENTAL = ReconcileScope("incremental")


@dataclass(frozen=True)
class Env:
    dsn: str
    layout: LakeLayout
    config: CaptureConfig
    state_dir: Path

    def check(
        self, scope: ReconcileScope = FULL, capture_timeout: float = 30.0, sweep_cycles: int = 96
    ) -> ReconciliationReport:
        return reconcile(
            self.config, self.layout, self.state_dir, scope,
            capture_timeout=capture_timeout, sweep_cycles=sweep_cycles,
        )  # fmt: skip

    def sync(self) -> None:
        """Capture everything committed so far and apply it to the lake."""
        with ChangeCapture(self.config) as capture:
            capture.start()
            capture.run()
        apply_landed(self.dsn, self.layout, self.config.changelog_dir, max_batches=1000)

    def sql(self, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []


@pytest.fixture
def env(migrated_dsn: str) -> Iterator[Env]:
    seed_database(migrated_dsn, SPEC)
    folder = world_searchable_tmpdir("ledger-test-reconcile-")
    name = conninfo_to_dict(migrated_dsn)["dbname"]
    layout = LakeLayout(folder / "lake")
    config = CaptureConfig(
        dsn=migrated_dsn, changelog_dir=layout.root / "_changelog",
        slot_name=f"lake_{name}", publication=f"lake_{name}",
    )  # fmt: skip
    build_lake(config, layout)
    try:
        yield Env(migrated_dsn, layout, config, folder / "state")
    finally:
        with psycopg.connect(migrated_dsn, autocommit=True) as conn:
            slots.drop_slot(conn, config.slot_name)
        shutil.rmtree(folder, ignore_errors=True)


def rewrite(path: Path, change: Callable[[pa.Table], pa.Table]) -> None:
    """Replace a lake file's rows behind the pipeline's back (same schema, same name)."""
    table = pq.read_table(path)
    pq.write_table(change(table).cast(table.schema), path)


def busy_base_file(layout: LakeLayout, table: str) -> Path:
    """A base file holding rows of at least two tenants, none of them hidden by an overlay."""
    overlaid = {k.local_date for k in layout.overlay_keys(table)}
    for path in layout.base_files(table):
        day = date.fromisoformat(path.parent.name.removeprefix("local_date="))
        tenants = set(pq.read_table(path, columns=["tenant_id"]).column(0).to_pylist())
        if day not in overlaid and len(tenants) >= 2:
            return path
    raise AssertionError(f"no base file of {table} holds two tenants")
