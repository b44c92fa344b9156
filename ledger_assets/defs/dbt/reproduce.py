"""Reproduce an older report: the marts rebuilt as of its source position (``lib.marts.reproduce``).

An operator launches ``reproduce_marts_job`` from the Dagster UI with the report's
``source_lsn`` (the dashboard shows it on every view; CSV and Parquet exports carry it)::

    ops:
      reproduce_marts_as_of:
        config:
          as_of_lsn: "0/1A2B3C4D"

A job rather than a command line: it runs where the pipeline's lake, system of record and state
directory are already configured (locally and in production alike), it waits in the same run
queue as the marts builds (a full dbt build on two shared cores), and the run history keeps who
reproduced which position, where the result went and which partition versions it read.
"""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from ledger_assets.defs.dbt.resources import DBT_PROJECT_DIR, MartsResource
from ledger_assets.defs.resources import LakeResource, PostgresResource
from ledger_assets.lib.cdc.lsn import Lsn
from ledger_assets.lib.lake.sync import lake_tables
from ledger_assets.lib.lake.versions import RETENTION_DAYS, VersionExpiredError
from ledger_assets.lib.marts.prepare import LakeNotReadyError
from ledger_assets.lib.marts.reproduce import reproduce_marts

#: Under the state directory: one folder per reproduction, never the live marts.
REPRODUCTIONS_DIR = "reproductions"


class ReproduceConfig(dg.Config):
    """Which report to reproduce, and where."""

    #: The report's source position: its ``source_lsn`` (e.g. ``0/1A2B3C4D``).
    as_of_lsn: str
    #: A new or empty folder; empty: ``<state dir>/reproductions/<position>-<UTC time>``.
    output_dir: str = ""


@dg.op(
    description="Rebuild every mart as of a published report's source position (lake partition "
    f"versions, kept {RETENTION_DAYS} days) into a folder of its own, published as Parquet.",
)
def reproduce_marts_as_of(
    context: dg.OpExecutionContext,
    config: ReproduceConfig,
    lake: LakeResource,
    postgres: PostgresResource,
    marts: MartsResource,
) -> dg.Output[str]:
    try:
        as_of = Lsn.parse(config.as_of_lsn.strip())
    except ValueError as exc:
        raise dg.Failure(description=str(exc)) from exc
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = (
        Path(config.output_dir)
        if config.output_dir
        else marts.database.parent / REPRODUCTIONS_DIR / f"{as_of.hex16}-{stamp}"
    )
    with postgres.connect() as conn:
        tables = lake_tables(conn)
    try:
        done = reproduce_marts(
            as_of, out, lake.layout, tables, postgres.dsn, marts.reconciliation_results,
            DBT_PROJECT_DIR,
        )  # fmt: skip
    except (VersionExpiredError, LakeNotReadyError, FileExistsError) as exc:
        # The operator's answer, not a stack trace: the position cannot be reproduced (here).
        raise dg.Failure(description=str(exc)) from exc
    versions = done.prepared.versions_read
    context.log.info(
        f"marts as of {as_of} reproduced in {done.seconds:.1f} s (dbt {done.dbt_seconds:.1f} s) "
        f"into {done.snapshot}, reading {sum(versions.values())} partition versions"
    )
    return dg.Output(
        str(done.snapshot),
        metadata={
            "as_of_lsn": str(as_of),
            "snapshot": dg.MetadataValue.path(str(done.snapshot)),
            "marts_database": dg.MetadataValue.path(str(done.folder / "marts.duckdb")),
            "rows": dg.MetadataValue.json(done.rows),
            "partition_versions_read": dg.MetadataValue.json(versions),
            "seconds": round(done.seconds, 1),
        },
    )


@dg.job(
    executor_def=dg.in_process_executor,  # one step: no step process to start (see marts_job)
    description="Reproduce an older report: rebuild the marts as of its source position "
    "(run config as_of_lsn) into a separate folder; the live marts are not touched.",
)
def reproduce_marts_job() -> None:
    reproduce_marts_as_of()
