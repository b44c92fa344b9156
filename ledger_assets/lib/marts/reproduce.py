"""Rebuild the marts as of a published report's source position, beside the live ones.

What a published report records about its source position: the marts asset publishes each
snapshot with ``source_lsn``, the lake watermark its lake views were created at (``CURRENT``
names it; :mod:`ledger_assets.lib.marts.export`), and the dashboard carries it on every view
(``meta.source_lsn``) and export (``source_lsn`` in a CSV's header and a Parquet file's
``ledger_export`` metadata, ``X-Ledger-Source-LSN``). The snapshot's ``source_tags.parquet``
holds, per tenant and day, the highest source LSN behind that day's numbers: what the caches
key on, not the report's position. A snapshot folder is deleted a few builds later, so the
position is the lasting handle on a report, not the folder.

:func:`reproduce_marts` runs the same ``dbt build`` as a full marts build, through the same
runner (:mod:`ledger_assets.lib.marts.dbt_runner`), over lake views as of that position
(``prepare_marts_database(as_of=)``: partition versions, kept
:data:`~ledger_assets.lib.lake.versions.RETENTION_DAYS` days), in a folder of its own::

    <out>/marts.duckdb                    the database dbt builds
    <out>/dbt_target/                     dbt's artifacts, partial-parse state and logs
    <out>/marts/snapshots/<stamp>/*.parquet, <out>/marts/CURRENT   the marts, published as
                                          the live ones are (``source_lsn`` = the position)

It never opens the live marts database, its dbt target or the live export root (the folder
must be new or empty), and it does not mark the lake as read by a published report: it is not
one, so it makes the lake keep no versions.

As of the position: every lake table. Not: the reference tables (tenants, Plaid accounts,
currencies) and the reconciliation results, read as they are now; a tenant renamed since shows
its new name and ``reconciliation_status`` shows the checks made since.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ledger_assets.lib.cdc.lsn import Lsn
from ledger_assets.lib.lake.layout import LakeLayout
from ledger_assets.lib.lake.schema import LakeTable
from ledger_assets.lib.marts.export import export_marts, mart_tables
from ledger_assets.lib.marts.prepare import PreparedDatabase, prepare_marts_database
from ledger_assets.lib.marts.project import MARTS_SCHEMA, run_dbt_process

#: The build a full marts run makes, without the unit tests (fixed fixtures, not data).
BUILD_ARGS = ("build", "--exclude-resource-type", "unit_test")


class ReproductionError(RuntimeError):
    """dbt failed to build the marts as of the position."""


@dataclass(frozen=True)
class Reproduction:
    as_of: Lsn
    #: The reproduction's own folder (see the module's docs).
    folder: Path
    #: The reproduced marts, one Parquet file per mart (``source_tags`` for source positions).
    snapshot: Path
    rows: dict[str, int]
    prepared: PreparedDatabase
    dbt_seconds: float
    seconds: float


def reproduce_marts(
    as_of: Lsn,
    out: Path,
    layout: LakeLayout,
    tables: Mapping[str, LakeTable],
    dsn: str,
    results_dir: Path,
    project_dir: Path,
) -> Reproduction:
    """Build every mart as of lake watermark ``as_of`` into ``out`` and export it as Parquet.

    Args:
        as_of: a published report's ``source_lsn``.
        out: a new or empty folder for the reproduction.
        layout, tables, dsn, results_dir: the lake, its tables (``sync.lake_tables``), the
            system of record and the reconciliation results, as for a live build.
        project_dir: the dbt project (also its profiles directory).

    Raises:
        FileExistsError: ``out`` holds files.
        VersionExpiredError: the versions ``as_of`` needs were pruned (retention).
        LakeNotReadyError: the lake is seeding or has not reached ``as_of``.
        ReproductionError: the dbt build failed.
    """
    started = time.monotonic()
    out = out.resolve()
    # dbt opens <LEDGER_STATE_DIR>/marts.duckdb: a folder with files could be a live state dir.
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: a reproduction needs a folder of its own")
    out.mkdir(parents=True, exist_ok=True)
    database = out / "marts.duckdb"
    prepared = prepare_marts_database(database, layout, tables, dsn, results_dir, as_of=as_of)
    try:
        target = out / "dbt_target"
        built = time.monotonic()
        result = run_dbt_process(BUILD_ARGS, project_dir, out, target_path=target)
        dbt_seconds = time.monotonic() - built
        if result.returncode != 0:
            raise ReproductionError(
                f"dbt build as of {as_of} failed (exit {result.returncode}):\n"
                f"{result.stdout[-4000:]}{result.stderr[-2000:]}"
            )
        report = export_marts(
            database, MARTS_SCHEMA, mart_tables(database, MARTS_SCHEMA), out / "marts",
            source_lsn=prepared.applied_lsn, seeded_lsn=prepared.seeded_lsn,
        )  # fmt: skip
    finally:
        # Nothing reads this database's lake views again: its pins would only hold disk.
        if prepared.pins is not None:
            prepared.pins.release()
    return Reproduction(
        as_of, out, report.snapshot, report.rows, prepared, dbt_seconds,
        time.monotonic() - started,
    )  # fmt: skip
