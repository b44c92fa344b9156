"""Resources of the marts: the dbt CLI and where the marts live."""

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DbtCliResource, DbtProject
from dagster_dbt.compat import DBT_PYTHON_VERSION
from packaging.version import Version

from ledger_assets.defs.reconciliation.resources import ReconciliationResource
from ledger_assets.defs.resources import LakeResource, PostgresResource
from ledger_assets.lib.marts.contracts import results_dir
from ledger_assets.lib.marts.project import dbt_runner_command

DBT_PROJECT_DIR = Path(__file__).resolve().parents[3] / "dbt_project"

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


class LedgerDbtCliResource(DbtCliResource):
    """``DbtCliResource`` without the start-up costs of every ``cli()`` call that the marts do
    not need (dagster-dbt 0.29; ``tests/dbt`` checks that the hooks overridden here still exist).

    Before starting dbt, dagster-dbt runs ``dbt --version`` in a subprocess (to tell dbt Core
    from the Fusion engine) and imports dbt in the run's process to open an adapter, which it
    uses only for ``fetch_row_counts()``/``fetch_column_metadata()``. Each is a full import of
    dbt: together about half the Dagster overhead of a one-day marts run. The command run is
    this environment's dbt-core, so its version is known without asking it; without an adapter
    the event stream is the same (materializations and checks come from dbt's structured log).
    """

    @cached_property
    def _cli_version(self) -> Version:
        assert DBT_PYTHON_VERSION is not None, "dbt-core is a dependency of this project"
        return DBT_PYTHON_VERSION

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> Any:
        return None


def dbt_cli() -> LedgerDbtCliResource:
    """The marts' dbt CLI: ``lib.marts.dbt_runner``, dbt's own CLI in this interpreter's
    environment except that it parses without the run's vars (see there), started through the
    warm dbt server when the run has one (``lib.marts.project.dbt_runner_command``). The
    command's arguments go in ``global_config_flags``, which dagster-dbt puts right after the
    executable, before dbt's arguments."""
    executable, *arguments = dbt_runner_command()
    return LedgerDbtCliResource(
        project_dir=str(DBT_PROJECT_DIR),
        profiles_dir=str(DBT_PROJECT_DIR),
        dbt_executable=executable,
        global_config_flags=arguments,
    )


class MartsResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where the marts are built and published.

    ``state_dir`` must be the ``LEDGER_STATE_DIR`` that dbt's profile (dbt_project/profiles.yml)
    reads, since dbt opens ``<state_dir>/marts.duckdb`` itself.
    """

    state_dir: str

    @property
    def database(self) -> Path:
        return Path(self.state_dir).resolve() / "marts.duckdb"

    @property
    def export_root(self) -> Path:
        return Path(self.state_dir).resolve() / "marts"

    @property
    def dbt_target(self) -> Path:
        """dbt's target path (artifacts, logs, partial-parse state), kept between runs so
        each run parses incrementally from the last one's state (runs on one marts database
        are serial anyway: DuckDB allows one writer)."""
        return Path(self.state_dir).resolve() / "dbt_target"

    @property
    def reconciliation_results(self) -> Path:
        return results_dir(Path(self.state_dir).resolve())


DBT_RESOURCES: dict[str, object] = {
    "dbt": dbt_cli(),
    "marts": MartsResource(state_dir=dg.EnvVar("LEDGER_STATE_DIR")),
}


def marts_run_resources(dsn: str, lake: LakeResource, state_dir: Path) -> dict[str, object]:
    """Every resource a ``ledger_marts`` run needs, for runs outside the code location (tests,
    benchmarks). dbt's profile reads ``LEDGER_STATE_DIR``, which must equal ``state_dir``."""
    return {
        "dbt": dbt_cli(),
        "lake": lake,
        "postgres": PostgresResource(dsn=dsn),
        "marts": MartsResource(state_dir=str(state_dir)),
        "reconciliation": ReconciliationResource(state_dir=str(state_dir)),
    }
