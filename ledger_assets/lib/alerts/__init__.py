"""Alerts on check results: decide (no floods), format (Slack-compatible), deliver, remember.

Dagster-free: the sensor in ``ledger_assets.defs`` turns check evaluations into
:class:`CheckOutcome` and calls :func:`deliver`.
"""

from ledger_assets.lib.alerts.book import AlertBook, AlertDecision, AlertRecord, CheckOutcome
from ledger_assets.lib.alerts.delivery import (
    AlertDeliveryError,
    append_alert_log,
    deliver,
    post_alert,
)
from ledger_assets.lib.alerts.slack import slack_payload

__all__ = [
    "AlertBook",
    "AlertDecision",
    "AlertDeliveryError",
    "AlertRecord",
    "CheckOutcome",
    "append_alert_log",
    "deliver",
    "post_alert",
    "slack_payload",
]
