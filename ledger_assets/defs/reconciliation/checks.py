"""Reconciliation as asset checks on the lake: every 15 minutes, and by hand from the UI.

One op computes everything (``lib.reconcile``): the Postgres and lake totals share one
watermark, so splitting them into separate ops would compare different moments. It reports one
check per lake table (``reconciles_with_postgres``) and Stripe's identities on the tables that
carry them (``stripe_identities_hold``). Every run also lands its per-partition results for the
marts (``lib.marts.contracts``), which is what gating reads.

With auto-heal on, a mismatching partition is rebuilt from Postgres, recorded as a
materialization of that lake partition (source ``auto_heal``), and checked again in the same
run; the check result says what was healed and whether the re-check passed.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Literal

import dagster as dg
from pydantic import Field

from ledger_assets.defs.lake.assets import lake_asset_key
from ledger_assets.defs.reconciliation.resources import ReconciliationResource
from ledger_assets.defs.resources import LakeResource, PostgresResource
from ledger_assets.lib.lake.layout import PartitionKey
from ledger_assets.lib.lake.repair import rebuild_partition
from ledger_assets.lib.lake.sync import lake_tables
from ledger_assets.lib.marts.contracts import write_results
from ledger_assets.lib.reconcile import (
    IdentityViolation,
    Mismatch,
    ReconcileScope,
    ReconciliationReport,
    Totals,
    reconcile,
)
from ledger_assets.lib.sor.catalog import MIRRORED_TABLES

RECONCILES = "reconciles_with_postgres"
IDENTITIES = "stripe_identities_hold"
#: The tables whose rows carry Stripe's identities (net = amount - fee, fee = sum of fee
#: details; a completed payout = the sum of its balance transactions).
IDENTITY_TABLES = ("stripe_balance_transactions", "stripe_payouts")
#: Drill-down lines per check result: enough to act on, small enough for the UI and an alert.
MAX_FINDINGS = 50

RECONCILIATION_CHECK_SPECS = [
    dg.AssetCheckSpec(
        RECONCILES,
        asset=lake_asset_key(spec.name),
        description=(
            f"lake/{spec.name} equals ledger.{spec.name} to the cent: row counts and sums of "
            "amount, fee and net per tenant, local day, currency and category, pinned to the "
            "lake's replication watermark."
        ),
    )
    for spec in MIRRORED_TABLES
] + [
    dg.AssetCheckSpec(
        IDENTITIES,
        asset=lake_asset_key(table),
        description="Stripe's identities hold on every lake row: net = amount - fee, fee = sum "
        "of fee details, and a completed payout equals the sum of its balance transactions.",
    )
    for table in IDENTITY_TABLES
]


class ReconcileConfig(dg.Config):
    """What one reconciliation run compares."""

    #: ``incremental``: partitions changed since the last pass, the ones deferred then, and a
    #: rolling slice of the rest. ``full``: every partition. ``partitions``: the listed ones.
    scope: Literal["incremental", "full", "partitions"] = "incremental"
    #: For ``partitions``: lake partition keys as the UI shows them, ``YYYY-MM-DD|tenant``.
    partitions: list[str] = Field(default_factory=list)


def scope_from(config: ReconcileConfig) -> ReconcileScope:
    pairs = set()
    for key in config.partitions:
        day, _, tenant = key.partition("|")
        pairs.add((int(tenant), date.fromisoformat(day)))
    if config.scope == "partitions" and not pairs:
        raise ValueError("scope 'partitions' needs at least one partition (YYYY-MM-DD|tenant)")
    return ReconcileScope(kind=config.scope, partitions=frozenset(pairs))


def mismatch_line(m: Mismatch) -> str:
    """One drill-down line: where, both totals in minor units, and the keys that differ."""

    def totals(t: Totals) -> str:
        return f"rows={t.rows} amount={t.amount} fee={t.fee} net={t.net}"

    keys = []
    for label, values in (
        ("missing from lake", m.missing_keys),
        ("extra in lake", m.extra_keys),
        ("different", m.different_keys),
    ):
        if values:
            keys.append(f"{label}: {', '.join(values[:10])}" + (" ..." if len(values) > 10 else ""))
    return (
        f"tenant {m.tenant_id} {m.local_date.isoformat()} {m.currency} {m.category}: "
        f"postgres {totals(m.postgres)} | lake {totals(m.lake)}"
        + (f" | {'; '.join(keys)}" if keys else "")
    )


def violation_line(v: IdentityViolation) -> str:
    return f"{v.identity} fails for {v.table} {v.key} (tenant {v.tenant_id}): {v.detail}"


def _mismatch_table(mismatches: list[Mismatch]) -> str:
    header = (
        "| tenant | day | currency | category | pg rows | lake rows | pg amount | lake amount "
        "| pg fee | lake fee | pg net | lake net | keys |\n" + "|---" * 13 + "|\n"
    )
    rows = []
    for m in mismatches[:MAX_FINDINGS]:
        keys = len(m.missing_keys) + len(m.extra_keys) + len(m.different_keys)
        rows.append(
            f"| {m.tenant_id} | {m.local_date} | {m.currency} | {m.category} "
            f"| {m.postgres.rows} | {m.lake.rows} | {m.postgres.amount} | {m.lake.amount} "
            f"| {m.postgres.fee} | {m.lake.fee} | {m.postgres.net} | {m.lake.net} | {keys} |"
        )
    return header + "\n".join(rows)


@dataclass(frozen=True)
class Heal:
    """What auto-heal did: the partitions it rebuilt and the re-check of exactly those."""

    rebuilt: tuple[PartitionKey, ...]
    recheck: ReconciliationReport


def _common_metadata(report: ReconciliationReport) -> "dict[str, dg.RawMetadataValue]":
    return {
        "status": report.status,
        "watermark_lsn": report.watermark,
        "postgres_lsn": report.postgres_lsn,
        "partitions_checked": report.partitions_checked,
        "rows_compared": report.rows_compared,
        "keys_in_flight": report.keys_in_flight,
        "postgres_seconds": round(report.postgres_seconds, 3),
        "lake_seconds": round(report.lake_seconds, 3),
        "reconciliation_run_id": report.run_id,
    }


def table_result(
    table: str, report: ReconciliationReport, heal: Heal | None
) -> dg.AssetCheckResult:
    """The ``reconciles_with_postgres`` result of one lake table."""
    metadata = _common_metadata(report)
    if report.status in ("skipped", "deferred"):
        # Not a verdict: nothing was compared (the lake is seeding, or the change log did not
        # catch up in time). The next cycle checks again; the status says why.
        return dg.AssetCheckResult(
            asset_key=lake_asset_key(table),
            check_name=RECONCILES,
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{report.status}: {report.reason}",
            metadata={**metadata, "findings": [], "fingerprint": ""},
        )
    mismatches = [m for m in report.mismatches if m.table == table]
    findings = [mismatch_line(m) for m in mismatches[:MAX_FINDINGS]]
    fingerprint = ",".join(
        sorted({f"{m.tenant_id}/{m.local_date}/{m.currency}" for m in mismatches})
    )
    metadata.update(
        {
            "mismatched_partitions": len({(m.tenant_id, m.local_date) for m in mismatches}),
            "findings": findings,
            "fingerprint": fingerprint,
            "drill_down": dg.MetadataValue.json(
                [
                    {
                        "tenant_id": m.tenant_id,
                        "local_date": m.local_date.isoformat(),
                        "currency": m.currency,
                        "category": m.category,
                        "missing_keys": list(m.missing_keys),
                        "extra_keys": list(m.extra_keys),
                        "different_keys": list(m.different_keys),
                        "samples": list(m.samples),
                    }
                    for m in mismatches[:MAX_FINDINGS]
                ]
            ),
        }
    )
    if mismatches:
        metadata["mismatches"] = dg.MetadataValue.md(_mismatch_table(mismatches))
    passed = not mismatches
    description = (
        f"lake/{table} matches Postgres at {report.watermark}"
        if passed
        else f"{len(mismatches)} mismatching total(s) in lake/{table}"
    )
    if heal is not None:
        rebuilt = [k for k in heal.rebuilt if k.table == table]
        if rebuilt:
            still = [m for m in heal.recheck.mismatches if m.table == table]
            metadata["auto_healed"] = [k.dagster_key for k in rebuilt]
            metadata["recheck_status"] = "pass" if not still else "fail"
            description += (
                f"; auto-heal rebuilt {len(rebuilt)} partition(s) from Postgres, re-check "
                + ("passed" if not still else f"still finds {len(still)} mismatch(es)")
            )
    return dg.AssetCheckResult(
        asset_key=lake_asset_key(table),
        check_name=RECONCILES,
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata=metadata,
    )


def identity_result(table: str, report: ReconciliationReport) -> dg.AssetCheckResult:
    violations = [v for v in report.identity_violations if v.table == table]
    findings = [violation_line(v) for v in violations[:MAX_FINDINGS]]
    return dg.AssetCheckResult(
        asset_key=lake_asset_key(table),
        check_name=IDENTITIES,
        passed=not violations,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"{len(violations)} row(s) break Stripe's identities"
            if violations
            else "Stripe's identities hold"
        ),
        metadata={
            **_common_metadata(report),
            "violations": len(violations),
            "findings": findings,
            "fingerprint": ",".join(sorted(v.key for v in violations)),
        },
    )


def heal_partitions(
    context: dg.AssetCheckExecutionContext,
    postgres: PostgresResource,
    lake: LakeResource,
    reconciliation: ReconciliationResource,
    report: ReconciliationReport,
) -> Heal:
    """Rebuild every mismatching partition from Postgres, record it, and check those again."""
    keys = sorted(
        PartitionKey(table, tenant, day) for table, tenant, day in report.mismatched_partitions()
    )
    with postgres.connect() as conn:
        tables = lake_tables(conn)
        for key in keys:
            written = rebuild_partition(conn, lake.layout, tables[key.table], key.tenant_id,
                                        key.local_date)  # fmt: skip
            context.op_execution_context.log_event(
                dg.AssetMaterialization(
                    asset_key=lake_asset_key(key.table),
                    partition=key.dagster_key,
                    metadata={
                        "dagster/row_count": written.rows,
                        "content_sha256": written.content_sha256,
                        "source": "auto_heal",
                        "reconciliation_run_id": report.run_id,
                    },
                )
            )
    context.log.warning(
        f"auto-heal rebuilt {len(keys)} partition(s) from Postgres: "
        + ", ".join(f"{k.table} {k.dagster_key}" for k in keys)
    )
    recheck = reconcile(
        lake.capture_config(postgres.dsn),
        lake.layout,
        reconciliation.root,
        ReconcileScope(
            kind="partitions", partitions=frozenset((k.tenant_id, k.local_date) for k in keys)
        ),
    )
    write_results(reconciliation.results_dir, recheck.results_table())
    return Heal(tuple(keys), recheck)


@dg.multi_asset_check(
    specs=RECONCILIATION_CHECK_SPECS,
    name="reconcile_lake_with_postgres",
    description="Compare the lake with Postgres to the cent, pinned to the replication "
    "watermark; check Stripe's identities on the lake.",
    # One reconciliation at a time: cycles share the incremental state (last watermark, sweep
    # cursor, deferred partitions).
    pool="reconciliation",
)
def reconcile_lake_with_postgres(
    context: dg.AssetCheckExecutionContext,
    config: ReconcileConfig,
    postgres: PostgresResource,
    lake: LakeResource,
    reconciliation: ReconciliationResource,
) -> Iterator[dg.AssetCheckResult]:
    report = reconcile(
        lake.capture_config(postgres.dsn), lake.layout, reconciliation.root, scope_from(config)
    )
    if report.status in ("pass", "fail"):
        write_results(reconciliation.results_dir, report.results_table())
    context.log.info(
        f"reconciliation {report.status} at watermark {report.watermark}: "
        f"{report.partitions_checked} partitions, {report.rows_compared} rows, "
        f"{report.keys_in_flight} keys in flight (checked next cycle), "
        f"postgres {report.postgres_seconds:.2f} s, lake {report.lake_seconds:.2f} s"
        + (f"; {report.reason}" if report.reason else "")
    )
    heal = None
    if report.status == "fail" and report.mismatches and reconciliation.auto_heal:
        heal = heal_partitions(context, postgres, lake, reconciliation, report)
    for spec in MIRRORED_TABLES:
        yield table_result(spec.name, report, heal)
    for table in IDENTITY_TABLES:
        yield identity_result(table, report)


reconciliation_job = dg.define_asset_job(
    "reconciliation_job",
    selection=dg.AssetSelection.checks(reconcile_lake_with_postgres),
    executor_def=dg.in_process_executor,
    description="Reconcile the lake with Postgres (incremental by default; full or chosen "
    "partitions through run config).",
)

reconciliation_schedule = dg.ScheduleDefinition(
    name="reconciliation_schedule",
    description="An incremental reconciliation cycle every 15 minutes.",
    job=reconciliation_job,
    cron_schedule="*/15 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

#: The incremental cycle finds lake-side damage at once (file drift) and CDC-carried changes
#: at once, but a Postgres change that bypassed the publication only when the rolling sweep
#: reaches its day; a nightly full pass bounds that to a day whatever the sweep's position.
reconciliation_full_schedule = dg.ScheduleDefinition(
    name="reconciliation_full_schedule",
    description="A full three-year reconciliation every night.",
    job=reconciliation_job,
    cron_schedule="40 3 * * *",
    run_config=dg.RunConfig({"reconcile_lake_with_postgres": ReconcileConfig(scope="full")}),
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
