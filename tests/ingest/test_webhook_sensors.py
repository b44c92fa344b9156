"""The webhook sensors: one run for waiting inbox rows, none while such a run waits to start."""

from datetime import UTC, datetime

import dagster as dg
import psycopg
from dagster._core.storage.dagster_run import DagsterRun

from ledger_assets.defs.plaid.sensors import plaid_sync_job, plaid_webhook_sensor
from ledger_assets.defs.resources import PostgresResource
from ledger_assets.defs.stripe.sensors import stripe_ingestion_job, stripe_webhook_sensor
from ledger_assets.lib.ingest.inbox import InboxEvent, land


def test_inbox_rows_get_one_run_and_a_waiting_run_takes_later_ones(migrated_dsn: str) -> None:
    resources = {"postgres": PostgresResource(dsn=migrated_dsn)}
    with dg.instance_for_test() as instance:

        def tick(sensor: object) -> object:
            context = dg.build_sensor_context(instance=instance, resources=resources)
            return sensor(context)  # type: ignore[operator]

        assert isinstance(tick(stripe_webhook_sensor), dg.SkipReason)
        assert isinstance(tick(plaid_webhook_sensor), dg.SkipReason)
        with psycopg.connect(migrated_dsn, autocommit=True) as conn:
            at = datetime(2026, 11, 29, tzinfo=UTC)
            land(conn, InboxEvent("stripe", "evt_1", "charge.updated", at, {"id": "evt_1"}, None))
            land(conn, InboxEvent("plaid", "h1", "TRANSACTIONS.SYNC_UPDATES_AVAILABLE", at,
                                  {"item_id": "item_1"}, None))  # fmt: skip
        stripe_request = tick(stripe_webhook_sensor)
        plaid_request = tick(plaid_webhook_sensor)
        assert isinstance(stripe_request, dg.RunRequest)
        assert isinstance(plaid_request, dg.RunRequest)
        assert plaid_request.run_config["ops"]["plaid_ingestion"]["config"]["item_ids"] == [
            "item_1"
        ]
        for job, run_id in ((stripe_ingestion_job, "1" * 36), (plaid_sync_job, "2" * 36)):
            instance.add_run(
                DagsterRun(job_name=job.name, run_id=run_id,
                           status=dg.DagsterRunStatus.NOT_STARTED)
            )  # fmt: skip
        for sensor in (stripe_webhook_sensor, plaid_webhook_sensor):
            skipped = tick(sensor)
            assert isinstance(skipped, dg.SkipReason)
            assert "waiting to start" in (skipped.skip_message or "")
