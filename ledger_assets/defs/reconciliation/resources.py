"""Reconciliation's settings: where its state lives, gating, auto-heal and where alerts go."""

import os
from pathlib import Path
from typing import Literal

import dagster as dg

from ledger_assets.lib.marts.contracts import results_dir

Gating = Literal["blocking", "warn"]
GATING_MODES: tuple[Gating, ...] = ("blocking", "warn")


class ReconciliationResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Reconciliation state under ``state_dir``; the optional switches come from the environment.

    The switches are optional, so they are read when a run or tick asks for them (an unset
    ``EnvVar`` would make the whole code location fail to load):

    * ``LEDGER_RECONCILIATION_GATING`` — ``blocking`` (default) refuses to build the marts of a
      day whose latest reconciliation found a mismatch; ``warn`` builds them and logs a warning.
    * ``LEDGER_RECONCILIATION_AUTO_HEAL`` — ``true`` rebuilds a mismatching partition from
      Postgres and re-checks it in the same run (off by default: a mismatch is evidence, and
      healing it erases the evidence unless someone asked for that).
    * ``LEDGER_ALERT_WEBHOOK_URL`` — a Slack-compatible incoming webhook; unset: alerts are only
      written to ``<state_dir>/reconciliation/alerts.jsonl``.
    """

    state_dir: str

    @property
    def root(self) -> Path:
        """The state folder ``lib.reconcile`` keeps its incremental state under."""
        return Path(self.state_dir).resolve()

    @property
    def folder(self) -> Path:
        return self.root / "reconciliation"

    @property
    def results_dir(self) -> Path:
        return results_dir(Path(self.state_dir).resolve())

    @property
    def alert_log(self) -> Path:
        return self.folder / "alerts.jsonl"

    @property
    def alert_book(self) -> Path:
        return self.folder / "alert_book.json"

    @property
    def gating(self) -> Gating:
        value = os.environ.get("LEDGER_RECONCILIATION_GATING", "").strip().lower() or "blocking"
        for mode in GATING_MODES:
            if value == mode:
                return mode
        raise ValueError(
            f"LEDGER_RECONCILIATION_GATING={value!r}: expected one of {', '.join(GATING_MODES)}"
        )

    @property
    def auto_heal(self) -> bool:
        value = os.environ.get("LEDGER_RECONCILIATION_AUTO_HEAL", "").strip().lower()
        return value in ("1", "true", "yes", "on")

    @property
    def alert_webhook_url(self) -> str | None:
        return os.environ.get("LEDGER_ALERT_WEBHOOK_URL", "").strip() or None

    @property
    def dagster_ui_url(self) -> str:
        host = os.environ.get("LEDGER_DAGSTER_HOST", "127.0.0.1")
        port = os.environ.get("LEDGER_DAGSTER_PORT", "3000")
        return f"http://{host}:{port}"


RECONCILIATION_RESOURCES: dict[str, object] = {
    "reconciliation": ReconciliationResource(state_dir=dg.EnvVar("LEDGER_STATE_DIR")),
}
