"""A real lake from a seeded Postgres, and the dbt project run against it (once per session).

12 tenants cover the generator's COVERAGE list: DST in both hemispheres, UTC+13/+14, a +5:45
zone, and 0-, 2- and 3-decimal currencies (jpy/clp, usd, kwd). Feb-Apr 2025 holds the US, EU
and southern-hemisphere DST changes.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from ledger_assets.lib.cdc import CaptureConfig
from ledger_assets.lib.cdc import slot as slots
from ledger_assets.lib.lake.layout import LakeLayout
from ledger_assets.lib.lake.schema import LakeTable
from ledger_assets.lib.lake.sync import build_lake, lake_tables
from ledger_assets.lib.marts.contracts import results_dir
from ledger_assets.lib.marts.prepare import BuildWindow, PreparedDatabase, prepare_marts_database
from ledger_assets.lib.marts.project import run_dbt_process
from ledger_assets.lib.sor.pgcluster import PrivateCluster
from ledger_assets.lib.synth.load import SeedSpec, seed_database
from tests.conftest import TEMPLATE_DB, create_database, drop_database, world_searchable_tmpdir

ROOT = Path(__file__).resolve().parents[2]
SPEC = SeedSpec(tenants=12, start=date(2025, 2, 1), days=75, target_rows=40_000, dispute_rate=0.03)


@dataclass(frozen=True)
class Lake:
    dsn: str
    layout: LakeLayout
    tables: dict[str, LakeTable]


@dataclass(frozen=True)
class DbtRun:
    """A dbt project copy with its own marts database."""

    project: Path
    state_dir: Path
    lake: Lake

    @property
    def database(self) -> Path:
        return self.state_dir / "marts.duckdb"

    def prepare(self, window: BuildWindow | None = None) -> PreparedDatabase:
        return prepare_marts_database(
            self.database,
            self.lake.layout,
            self.lake.tables,
            self.lake.dsn,
            results_dir(self.state_dir),
            window,
        )

    def dbt(self, *args: str, runner: bool = False) -> subprocess.CompletedProcess[str]:
        """Run dbt's CLI, or (``runner``) the marts asset's ``lib.marts.dbt_runner``."""
        return run_dbt_process(args, self.project, self.state_dir, runner=runner, timeout=600)


@pytest.fixture(scope="session")
def seeded_lake(pg_cluster: PrivateCluster) -> Iterator[Lake]:
    name = create_database(pg_cluster, TEMPLATE_DB)
    dsn = pg_cluster.dsn(name)
    folder = world_searchable_tmpdir("ledger-test-marts-")
    layout = LakeLayout(folder / "lake")
    config = CaptureConfig(
        dsn=dsn, changelog_dir=layout.root / "_changelog",
        slot_name=f"lake_{conninfo_to_dict(dsn)['dbname']}",
        publication=f"lake_{conninfo_to_dict(dsn)['dbname']}",
    )  # fmt: skip
    try:
        seed_database(dsn, SPEC)
        build_lake(config, layout)
        with psycopg.connect(dsn) as conn:
            tables = lake_tables(conn)
        yield Lake(dsn, layout, tables)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            slots.drop_slot(conn, config.slot_name)
        drop_database(pg_cluster, name)
        shutil.rmtree(folder, ignore_errors=True)


def copy_project(target: Path) -> Path:
    project = target / "dbt_project"
    shutil.copytree(
        ROOT / "dbt_project",
        project,
        ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"),
    )
    return project


@pytest.fixture(scope="session")
def built_marts(seeded_lake: Lake, tmp_path_factory: pytest.TempPathFactory) -> DbtRun:
    """A full `dbt build` (models, data tests, unit tests) over the seeded lake."""
    folder = tmp_path_factory.mktemp("marts")
    run = DbtRun(copy_project(folder), folder / "state", seeded_lake)
    run.prepare()
    result = run.dbt("build")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    return run
