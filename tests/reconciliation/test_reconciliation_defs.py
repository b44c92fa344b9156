"""Reconciliation in Dagster: the checks, their drill-down, alerts, auto-heal and gating.

A real Postgres and a real lake; the checks run through a real (ephemeral) Dagster instance,
and the alert sensor posts to a real local HTTP receiver (the demo's Slack stand-in).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import httpx
import psycopg
import pyarrow.parquet as pq
import pytest
from psycopg.conninfo import conninfo_to_dict

from ledger_assets.defs.lake.assets import LAKE_ASSETS, lake_asset_key
from ledger_assets.defs.reconciliation.alerts import reconciliation_alert_sensor
from ledger_assets.defs.reconciliation.checks import (
    RECONCILES,
    reconcile_lake_with_postgres,
    reconciliation_job,
)
from ledger_assets.defs.reconciliation.gating import gate_marts_window
from ledger_assets.defs.reconciliation.resources import ReconciliationResource
from ledger_assets.defs.resources import LakeResource, PostgresResource
from ledger_assets.lib.cdc import slot as slots
from ledger_assets.lib.lake.layout import LakeLayout, PartitionKey
from ledger_assets.lib.lake.sync import build_lake
from ledger_assets.lib.standins.slack import build_slack_standin
from ledger_assets.lib.synth.load import SeedSpec, seed_database
from tests.conftest import world_searchable_tmpdir
from tests.http_server import serve

SPEC = SeedSpec(tenants=3, start=date(2025, 3, 1), days=20, target_rows=3000)


@dataclass
class World:
    dsn: str
    layout: LakeLayout
    state_dir: Path
    resources: dict[str, object]
    instance: dg.DagsterInstance
    alerts_url: str

    def run_checks(self, **config: object) -> dg.ExecuteInProcessResult:
        defs = dg.Definitions(
            assets=LAKE_ASSETS,
            asset_checks=[reconcile_lake_with_postgres],
            jobs=[reconciliation_job],
            resources=self.resources,
        )
        run_config = {"ops": {reconcile_lake_with_postgres.node_def.name: {"config": config}}}
        return defs.resolve_job_def(reconciliation_job.name).execute_in_process(
            instance=self.instance, run_config=run_config if config else None
        )

    def alerts(self) -> list[dict[str, object]]:
        response = httpx.get(self.alerts_url, headers={"accept": "application/json"})
        return list(response.json())

    def tick_alert_sensor(self) -> None:
        cursor = getattr(self, "_cursor", None)
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=cursor,
            resources={"reconciliation": self.resources["reconciliation"]},
        )
        reconciliation_alert_sensor(context)
        self._cursor = context.cursor


@pytest.fixture
def world(migrated_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    seed_database(migrated_dsn, SPEC)
    folder = world_searchable_tmpdir("ledger-test-recon-defs-")
    name = str(conninfo_to_dict(migrated_dsn)["dbname"])
    lake = LakeResource(
        root=str(folder / "lake"), slot_name=f"lake_{name}", publication=f"lake_{name}"
    )
    build_lake(lake.capture_config(migrated_dsn), lake.layout)
    monkeypatch.delenv("LEDGER_RECONCILIATION_AUTO_HEAL", raising=False)
    monkeypatch.delenv("LEDGER_RECONCILIATION_GATING", raising=False)
    try:
        with serve(build_slack_standin()) as url:
            monkeypatch.setenv("LEDGER_ALERT_WEBHOOK_URL", f"{url}/alerts")
            with dg.DagsterInstance.ephemeral() as instance:
                yield World(
                    dsn=migrated_dsn,
                    layout=lake.layout,
                    state_dir=folder / "state",
                    resources={
                        "postgres": PostgresResource(dsn=migrated_dsn),
                        "lake": lake,
                        "reconciliation": ReconciliationResource(state_dir=str(folder / "state")),
                    },
                    instance=instance,
                    alerts_url=f"{url}/alerts",
                )
    finally:
        with psycopg.connect(migrated_dsn, autocommit=True) as conn:
            slots.drop_slot(conn, lake.slot_name)
        shutil.rmtree(folder, ignore_errors=True)


def evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {
        f"{e.asset_key.to_user_string()}:{e.check_name}": e
        for e in result.get_asset_check_evaluations()
    }


def change_one_cent(layout: LakeLayout) -> tuple[PartitionKey, str]:
    """Add one minor unit to one charge's amount in its lake file; returns where and which id."""
    path = layout.base_files("stripe_charges")[3]
    table = pq.read_table(path)
    row = table.slice(0, 1).to_pylist()[0]
    amounts = table.column("amount").to_pylist()
    amounts[0] += 1
    index = table.schema.get_field_index("amount")
    changed = table.set_column(index, table.schema.field(index), [amounts])
    pq.write_table(changed, path)
    return PartitionKey("stripe_charges", int(row["tenant_id"]), row["local_date"]), str(row["id"])


def test_a_clean_lake_passes_every_check(world: World) -> None:
    result = world.run_checks()
    assert result.success
    found = evaluations(result)
    assert len(found) == 8
    failed = {k: e.description for k, e in found.items() if not e.passed}
    assert failed == {}
    meta = found[f"lake/stripe_charges:{RECONCILES}"].metadata
    assert meta["partitions_checked"].value > 0


def test_a_changed_cent_fails_with_drill_down_alerts_once_and_recovers(world: World) -> None:
    key, charge_id = change_one_cent(world.layout)
    failing = evaluations(world.run_checks(scope="full"))[f"lake/stripe_charges:{RECONCILES}"]
    assert not failing.passed
    findings = failing.metadata["findings"].value
    assert isinstance(findings, list)
    assert len(findings) == 1
    assert f"tenant {key.tenant_id} {key.local_date.isoformat()}" in findings[0]
    assert charge_id in findings[0]
    drill = failing.metadata["drill_down"].value
    assert isinstance(drill, list)
    assert drill[0]["different_keys"] == [charge_id]
    # Other tables are not blamed.
    others = evaluations(world.run_checks(scope="full"))
    assert {k for k, e in others.items() if not e.passed} == {f"lake/stripe_charges:{RECONCILES}"}

    world.tick_alert_sensor()
    posted = world.alerts()
    assert len(posted) == 1
    assert charge_id in json.dumps(posted[0]["payload"])
    world.tick_alert_sensor()  # the same failure again: suppressed
    assert len(world.alerts()) == 1

    # Gating: the day's marts are refused while the mismatch is open.
    with pytest.raises(dg.Failure, match=f"tenant {key.tenant_id}"):
        gate_marts_window(
            dg.get_dagster_logger(),  # type: ignore[arg-type]
            world.resources["reconciliation"],  # type: ignore[arg-type]
            key.local_date,
            date.fromordinal(key.local_date.toordinal() + 1),
        )

    # Auto-heal rebuilds the partition from Postgres, records it, and the re-check passes.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEDGER_RECONCILIATION_AUTO_HEAL", "true")
        healed = world.run_checks(scope="full")
    check = evaluations(healed)[f"lake/stripe_charges:{RECONCILES}"]
    assert check.metadata["auto_healed"].value == [key.dagster_key]
    assert check.metadata["recheck_status"].value == "pass"
    materialized = [
        e.event_specific_data.materialization  # type: ignore[union-attr]
        for e in healed.get_asset_materialization_events()
    ]
    assert [(m.asset_key, m.partition) for m in materialized] == [
        (lake_asset_key("stripe_charges"), key.dagster_key)
    ]
    assert gate_marts_window(
        dg.get_dagster_logger(),  # type: ignore[arg-type]
        world.resources["reconciliation"],  # type: ignore[arg-type]
        key.local_date,
        date.fromordinal(key.local_date.toordinal() + 1),
    ) == {"reconciliation_gate": "clear"}

    assert all(e.passed for e in evaluations(world.run_checks(scope="full")).values())
    world.tick_alert_sensor()
    posted = world.alerts()
    assert len(posted) == 2, "one recovery message"
    assert "recover" in json.dumps(posted[0]["payload"]).lower()
    world.tick_alert_sensor()
    assert len(world.alerts()) == 2


def test_warn_gating_builds_with_a_warning(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    key, _ = change_one_cent(world.layout)
    world.run_checks(scope="full")
    monkeypatch.setenv("LEDGER_RECONCILIATION_GATING", "warn")
    gate = gate_marts_window(
        dg.get_dagster_logger(),  # type: ignore[arg-type]
        world.resources["reconciliation"],  # type: ignore[arg-type]
        key.local_date,
        date.fromordinal(key.local_date.toordinal() + 1),
    )
    assert gate["reconciliation_gate"] == "warned"
    monkeypatch.setenv("LEDGER_RECONCILIATION_GATING", "sometimes")
    with pytest.raises(ValueError, match="LEDGER_RECONCILIATION_GATING"):
        world.resources["reconciliation"].gating  # type: ignore[attr-defined]  # noqa: B018


def test_a_dead_alert_webhook_is_retried_on_the_next_tick(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    change_one_cent(world.layout)
    world.run_checks(scope="full")
    monkeypatch.setenv("LEDGER_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/alerts")
    world.tick_alert_sensor()
    assert world.alerts() == []
    monkeypatch.setenv("LEDGER_ALERT_WEBHOOK_URL", world.alerts_url)
    world.tick_alert_sensor()
    assert len(world.alerts()) == 1
    log = (world.state_dir / "reconciliation" / "alerts.jsonl").read_text().splitlines()
    assert len(log) >= 2, "every attempt is in the local log"
