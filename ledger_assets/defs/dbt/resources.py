"""Resources of the marts: the dbt CLI and where the marts live."""

from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource, DbtProject

from ledger_assets.defs.reconciliation.resources import ReconciliationResource
from ledger_assets.defs.resources import LakeResource, PostgresResource
from ledger_assets.lib.marts.contracts import results_dir

DBT_PROJECT_DIR = Path(__file__).resolve().parents[3] / "dbt_project"

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


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
    def reconciliation_results(self) -> Path:
        return results_dir(Path(self.state_dir).resolve())


DBT_RESOURCES: dict[str, object] = {
    "dbt": DbtCliResource(project_dir=dbt_project),
    "marts": MartsResource(state_dir=dg.EnvVar("LEDGER_STATE_DIR")),
}


def marts_run_resources(dsn: str, lake: LakeResource, state_dir: Path) -> dict[str, object]:
    """Every resource a ``ledger_marts`` run needs, for runs outside the code location (tests,
    benchmarks). dbt's profile reads ``LEDGER_STATE_DIR``, which must equal ``state_dir``."""
    return {
        "dbt": DbtCliResource(project_dir=dbt_project),
        "lake": lake,
        "postgres": PostgresResource(dsn=dsn),
        "marts": MartsResource(state_dir=str(state_dir)),
        "reconciliation": ReconciliationResource(state_dir=str(state_dir)),
    }
