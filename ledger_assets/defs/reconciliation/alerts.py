"""Alerts on reconciliation results: open-source Dagster has no alerting, so a sensor posts them.

The sensor reads the latest evaluation of every reconciliation check from the instance's event
log, turns each one it has not seen into an outcome, and lets ``lib.alerts`` decide: one alert
per new failure (with the drill-down), a recovery message when the check passes again, nothing
for repeats. The cursor holds the last evaluation id seen per check; an evaluation whose
delivery failed is not marked seen, so the next tick retries it.
"""

import json
from datetime import UTC, datetime

import dagster as dg
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from ledger_assets.defs.reconciliation.checks import RECONCILIATION_CHECK_SPECS
from ledger_assets.defs.reconciliation.resources import ReconciliationResource
from ledger_assets.lib.alerts import AlertBook, AlertDeliveryError, CheckOutcome, deliver

_DONE = (AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED)


def _metadata_value(metadata: dict[str, dg.MetadataValue], key: str, default: object) -> object:
    value = metadata.get(key)
    return default if value is None else value.value


def outcome_of(
    check: dg.AssetCheckKey,
    run_id: str,
    evaluation: dg.AssetCheckEvaluation,
    ui_url: str,
) -> CheckOutcome:
    metadata = dict(evaluation.metadata)
    findings = _metadata_value(metadata, "findings", [])
    fingerprint = _metadata_value(metadata, "fingerprint", "")
    return CheckOutcome(
        check=check.to_user_string(),
        passed=evaluation.passed,
        run_id=run_id,
        summary=evaluation.description or ("passed" if evaluation.passed else "failed"),
        findings=tuple(str(f) for f in findings) if isinstance(findings, list) else (),
        fingerprint=str(fingerprint),
        url=f"{ui_url}/runs/{run_id}",
    )


@dg.sensor(
    name="reconciliation_alert_sensor",
    description="Post reconciliation failures (with the drill-down) and recoveries to "
    "LEDGER_ALERT_WEBHOOK_URL and the local alert log; repeats are suppressed.",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def reconciliation_alert_sensor(
    context: dg.SensorEvaluationContext, reconciliation: ReconciliationResource
) -> dg.SkipReason:
    seen: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
    keys = [spec.key for spec in RECONCILIATION_CHECK_SPECS]
    latest = context.instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    book = AlertBook(reconciliation.alert_book)
    sent: list[str] = []
    failed: list[str] = []
    for key, record in sorted(latest.items(), key=lambda item: item[0].to_user_string()):
        name = key.to_user_string()
        if record.status not in _DONE or record.event is None or seen.get(name) == record.id:
            continue
        dagster_event = record.event.dagster_event
        evaluation = None if dagster_event is None else dagster_event.event_specific_data
        if not isinstance(evaluation, dg.AssetCheckEvaluation):
            seen[name] = record.id
            continue
        outcome = outcome_of(key, record.run_id, evaluation, reconciliation.dagster_ui_url)
        try:
            decision = deliver(
                book,
                outcome,
                webhook_url=reconciliation.alert_webhook_url,
                log_path=reconciliation.alert_log,
                now=datetime.now(UTC),
            )
        except AlertDeliveryError as exc:
            failed.append(f"{name}: {exc}")
            continue
        seen[name] = record.id
        sent.append(f"{name}: {decision.name.lower()}")
    context.update_cursor(json.dumps(seen, sort_keys=True))
    if failed:
        context.log.error("alert delivery failed (retried next tick): " + "; ".join(failed))
    return dg.SkipReason(
        "; ".join(sent + failed) if sent or failed else "no new reconciliation results"
    )
