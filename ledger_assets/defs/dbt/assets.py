"""The dbt marts as Dagster assets, partitioned by account-local day like the lake.

Partitions: the lake is ``date × tenant``; the marts are ``date`` only (a mart day holds every
tenant, and 1,000 tenants × 3 years as mart partitions would be a million keys for no gain).
Each lake source maps onto the marts with ``MultiToSingleDimensionPartitionMapping("date")``:
mart day *d* depends on every tenant's lake partition of day *d*, so a CDC change to
``(d, tenant)`` makes mart day *d* stale and nothing else. One run rebuilds the run's partition
window (one day, or a backfill's whole range in a single run) through dbt vars
``start_date``/``end_date``; the incremental models replace exactly those days.

Two marts reach outside the window on purpose, and the graph cannot show it: the dispute cohort
mart also rebuilds the cohorts (charge days) of disputes created in the window, so a late
dispute updates its old charge's cohort in the same run; the roll-forward rebuilds every day from
the window's start on (a running balance depends on all earlier days) and monthly revenue the
months that overlap the window.

Before dbt runs, the lake views and the reference tables are recreated in the marts database
(``lib.marts.prepare``), scoped to the files of the window's days and the days they reach, so a
one-day run costs the same whatever the lake's length; the run refuses to start while the lake
is not seeded or still seeding.
After a successful build the marts are published as one Parquet snapshot (``lib.marts.export``).
"""

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from ledger_assets.defs.dbt.resources import MartsResource, dbt_project
from ledger_assets.defs.lake.assets import LAKE_KEY_PREFIX
from ledger_assets.defs.partitions import daily_partitions
from ledger_assets.defs.reconciliation.gating import gate_marts_window
from ledger_assets.defs.reconciliation.resources import ReconciliationResource
from ledger_assets.defs.resources import LakeResource, PostgresResource
from ledger_assets.lib.lake.sync import lake_tables
from ledger_assets.lib.lake.versions import mark_published
from ledger_assets.lib.marts.export import export_marts, mart_tables
from ledger_assets.lib.marts.prepare import BuildWindow, prepare_marts_database
from ledger_assets.lib.marts.project import (
    MARTS_SCHEMA,
    project_files,
    project_fingerprint,
    record_views_built,
    views_built_from,
    window_independent_views,
)


class MartsConfig(dg.Config):
    """Run configuration of the marts."""

    #: Rebuild every model from scratch over the whole lake, ignoring the partition window.
    full_refresh: bool = False
    #: Also run the dbt unit tests (fixed fixtures; CI runs them, partition runs need not).
    unit_tests: bool = False


class LedgerDbtTranslator(DagsterDbtTranslator):
    """Source keys come from ``meta.dagster.asset_key`` (the lake's and the system of record's
    own keys); lake sources map onto the daily marts by their date dimension."""

    def get_partition_mapping(
        self,
        dbt_resource_props: Mapping[str, Any],
        dbt_parent_resource_props: Mapping[str, Any],
    ) -> dg.PartitionMapping | None:
        if dbt_parent_resource_props.get("resource_type") == "source":
            key = self.get_asset_key(dbt_parent_resource_props)
            if key.path[0] == LAKE_KEY_PREFIX:
                return dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="date")
        return None

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        # models/<layer>/...: staging, intermediate, marts.
        fqn = dbt_resource_props.get("fqn") or []
        return f"dbt_{fqn[1]}" if len(fqn) > 2 else "dbt"


def build_window(window: dg.TimeWindow | None, config: MartsConfig) -> BuildWindow | None:
    """The account-local days a run rebuilds: the partition window's dates (None: all)."""
    if config.full_refresh or window is None:
        return None
    return BuildWindow(window.start.date(), window.end.date())


#: The staging models' tests over the lake's rows (dbt_project.yml tags them): ids unique,
#: references present. A windowed run keeps them in its build (the window's rows: cheap); a
#: build of everything publishes the marts without them and then runs :func:`lake_audit_args`.
LAKE_AUDIT = "tag:lake_audit"
#: The same tests as a selector of dbt_project/selectors.yml. dagster-dbt adds the asset
#: selection (`--select fqn:*`) after our arguments, and dbt keeps the last --select but lets a
#: --selector override --select.
LAKE_AUDIT_SELECTOR = "lake_audit"


def dbt_build_args(
    window: dg.TimeWindow | None, config: MartsConfig, kept_views: Sequence[str] = ()
) -> list[str]:
    """The ``dbt build`` arguments for a run over ``window`` (None: everything).

    The window's dates are the partition keys' account-local days; end is exclusive.
    ``kept_views`` (windowed runs only) are left as they are, with their data tests. A build
    of everything leaves out the lake audit (:data:`LAKE_AUDIT`), which the marts asset runs
    after publishing (:func:`lake_audit_args`).
    """
    args = ["build"]
    if config.full_refresh or window is None:
        args += ["--exclude", LAKE_AUDIT]
        if config.full_refresh:
            args.append("--full-refresh")
    else:
        dbt_vars = {
            "start_date": window.start.date().isoformat(),
            "end_date": window.end.date().isoformat(),
        }
        args += ["--vars", json.dumps(dbt_vars, sort_keys=True)]
        if kept_views:
            args += ["--exclude", " ".join(kept_views)]
    if not config.unit_tests:
        args += ["--exclude-resource-type", "unit_test"]
    return args


def lake_audit_args() -> list[str]:
    """The ``dbt test`` arguments of the lake audit after a build of everything.

    Over the whole lake it is a few scans that each group up to every row by its id, which
    DuckDB spreads over every core: one test at a time, as two at once compete for cores and
    memory (at 199M lake rows the two largest took 37 s and 32 s side by side, 12.5 s and
    12.2 s one after the other).
    """
    return ["test", "--selector", LAKE_AUDIT_SELECTOR, "--threads", "1"]


def _manifest_is_stale() -> bool:
    """No manifest, or a project file (model, macro, test, YAML) newer than it."""
    manifest = dbt_project.manifest_path
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime_ns
    return any(
        path.stat().st_mtime_ns > built for path in project_files(Path(dbt_project.project_dir))
    )


def _manifest_path() -> Path:
    # `dagster dev` re-parses on load; elsewhere parse when the manifest is missing (a fresh
    # clone, CI) or older than the project (a pulled change), so the code location never loads
    # models from an outdated manifest.
    dbt_project.prepare_if_dev()
    if _manifest_is_stale():
        dbt_project.preparer.prepare(dbt_project)
    return Path(dbt_project.manifest_path)


MANIFEST_PATH = _manifest_path()


@dbt_assets(
    manifest=MANIFEST_PATH,
    project=dbt_project,
    name="ledger_marts",
    partitions_def=daily_partitions,
    dagster_dbt_translator=LedgerDbtTranslator(),
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="marts",
)
def ledger_marts(
    context: dg.AssetExecutionContext,
    dbt: DbtCliResource,
    lake: LakeResource,
    postgres: PostgresResource,
    marts: MartsResource,
    reconciliation: ReconciliationResource,
    config: MartsConfig,
) -> Iterator[Any]:
    """Refresh the lake views, build the partition window's marts, publish them as Parquet."""
    with postgres.connect() as conn:
        tables = lake_tables(conn)
    # One day, or a range of days in one run (the schedule's recent days, a backfill).
    partitioned = context.has_partition_key or context.has_partition_key_range
    window = context.partition_time_window if partitioned else None
    days = build_window(window, config)
    # Gating: a window holding a partition whose latest reconciliation is a mismatch is not
    # built (blocking, the default) or is built with a warning (ARCHITECTURE.md §8).
    gate = gate_marts_window(
        context.log, reconciliation,
        days.start if days else date.min, days.end if days else date.max,
    )  # fmt: skip
    context.log.info(f"reconciliation gate: {gate['reconciliation_gate']}")
    prepared = prepare_marts_database(
        marts.database, lake.layout, tables, postgres.dsn, marts.reconciliation_results,
        window=days,
    )  # fmt: skip
    # Every lake file older than this may be read by the views just created (the report). The
    # mark is set before dbt reads them: CDC may replace one of those files during the build,
    # and only a mark already in place makes that replacement keep the content as a version
    # (as-of reads). A build that then fails costs a few versions nobody needed.
    mark_published(lake.layout, time.time_ns())
    context.log.info(
        f"marts database ready in {prepared.seconds:.2f} s: lake at {prepared.applied_lsn}, "
        f"{sum(prepared.lake_files.values())} lake files (days outside the window: "
        f"{prepared.reach_days}), reference rows {prepared.sor_rows}, "
        f"{prepared.reconciliation_files} reconciliation result files"
    )
    # The staging and intermediate views persist in the marts database: a windowed run keeps
    # those that do not read the window when they were built from this very project, and a
    # run that re-creates them forgets the record until it has succeeded.
    fingerprint = project_fingerprint(Path(dbt_project.project_dir))
    keep_views = days is not None and views_built_from(marts.database) == fingerprint
    kept = window_independent_views(json.loads(MANIFEST_PATH.read_text())) if keep_views else []
    if not keep_views:
        record_views_built(marts.database, None)
    context.log.info(
        f"dbt views: {len(kept)} kept as built"
        + ("" if keep_views else " (views re-created: full build, or a new project)")
    )
    invocation = dbt.cli(
        dbt_build_args(window, config, kept), context=context, target_path=marts.dbt_target
    )
    yield from invocation.stream()
    if not keep_views:
        record_views_built(marts.database, fingerprint)
    report = export_marts(
        marts.database,
        MARTS_SCHEMA,
        mart_tables(marts.database, MARTS_SCHEMA),
        marts.export_root,
        source_lsn=prepared.applied_lsn,
        seeded_lsn=prepared.seeded_lsn,
    )
    context.log.info(
        f"published marts snapshot {report.snapshot.name} in {report.seconds:.2f} s: {report.rows}"
    )
    audited = {key.asset_key for key in context.selected_asset_check_keys}
    if days is None and any(key.path[0] == "staging" for key in audited):
        # The lake audit of a build of everything runs after publishing: over a 200M-row lake
        # it costs as much as every mart together, and publishing does not wait for it. The
        # reconciliation gate above already refused a lake that does not match Postgres, row
        # counts included; a failing audit fails this run and shows on the staging assets'
        # checks (ARCHITECTURE.md §9, "Full-build cost").
        audit = dbt.cli(lake_audit_args(), context=context, target_path=marts.dbt_target)
        yield from audit.stream()
