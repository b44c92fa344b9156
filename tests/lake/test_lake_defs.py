"""The Dagster side of CDC: seed sensor → seed run, capture sensor → one apply run per tick."""

import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
from dagster._core.storage.dagster_run import DagsterRun
from psycopg.conninfo import conninfo_to_dict

from ledger_assets.defs.cdc.checks import slot_is_healthy
from ledger_assets.defs.cdc.sensors import cdc_capture_sensor, lake_seed_sensor
from ledger_assets.defs.lake import jobs
from ledger_assets.defs.lake.assets import LAKE_ASSETS, lake_asset_key
from ledger_assets.defs.lake.jobs import lake_apply_job, lake_compaction_job, lake_seed_job
from ledger_assets.defs.reconciliation.resources import ReconciliationResource
from ledger_assets.defs.resources import LakeResource, PostgresResource, SensorWaitResource
from ledger_assets.lib.cdc import ChangeCapture, list_batches
from ledger_assets.lib.cdc import slot as slots
from ledger_assets.lib.lake.sync import read_lake_state
from ledger_assets.lib.reconcile.state import IncrementalState, write_incremental_state
from ledger_assets.lib.synth.load import SeedSpec, seed_database


@pytest.fixture
def env(migrated_dsn: str, tmp_path: Path) -> Any:
    seed_database(migrated_dsn, SeedSpec(tenants=3, days=30, target_rows=2000))
    name = str(conninfo_to_dict(migrated_dsn)["dbname"])
    resources = {
        "postgres": PostgresResource(dsn=migrated_dsn),
        "lake": LakeResource(root=str(tmp_path / "lake"), slot_name=f"s_{name}",
                             publication=f"p_{name}"),
        "sensor_wait": SensorWaitResource(seconds=0),  # one look per tick, by hand
    }  # fmt: skip
    instance = dg.DagsterInstance.ephemeral()
    yield migrated_dsn, resources, instance
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        slots.drop_slot(conn, f"s_{name}")


def tick(sensor: Any, instance: dg.DagsterInstance, resources: dict[str, Any]) -> Any:
    context = dg.build_sensor_context(instance=instance, resources=resources)
    return sensor(context)


def test_seed_then_capture_then_apply(env: Any) -> None:
    dsn, resources, instance = env
    request = tick(lake_seed_sensor, instance, resources)
    assert isinstance(request, dg.RunRequest)
    assert tick(cdc_capture_sensor, instance, resources).skip_message.startswith("the lake is not")
    assert lake_seed_job.execute_in_process(resources=resources, instance=instance).success
    lake: LakeResource = resources["lake"]
    assert read_lake_state(lake.layout).seeded_lsn is not None
    assert isinstance(tick(lake_seed_sensor, instance, resources), dg.SkipReason)

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "update ledger.stripe_charges set description = 'edited' "
            "where id = (select min(id) from ledger.stripe_charges)"
        )
    request = tick(cdc_capture_sensor, instance, resources)
    assert isinstance(request, dg.RunRequest)
    assert request.run_key.startswith("cdc-")
    # A replayed tick before the run has applied anything names the same range.
    assert tick(cdc_capture_sensor, instance, resources).run_key == request.run_key
    # While an apply run waits to start, ticks add none: that run takes everything landed.
    with dg.instance_for_test() as busy:
        busy.add_run(DagsterRun(job_name=lake_apply_job.name, run_id="e" * 36,
                                status=dg.DagsterRunStatus.NOT_STARTED))  # fmt: skip
        waiting = tick(cdc_capture_sensor, busy, resources)
    assert isinstance(waiting, dg.SkipReason)
    assert "waiting to start" in (waiting.skip_message or "")
    result = lake_apply_job.execute_in_process(resources=resources, instance=instance)
    assert result.success
    materialized = [
        e.event_specific_data.materialization  # type: ignore[union-attr]
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
    ]
    assert {m.asset_key for m in materialized} == {lake_asset_key("stripe_charges")}
    assert all(m.metadata["source"].value == "cdc" for m in materialized)
    assert len(materialized) == 1
    assert isinstance(tick(cdc_capture_sensor, instance, resources), dg.SkipReason)

    # While another process captures (a reconciliation cycle catching up to its snapshot), the
    # tick skips instead of failing.
    with ChangeCapture(lake.capture_config(dsn)):
        busy = tick(cdc_capture_sensor, instance, resources)
    assert isinstance(busy, dg.SkipReason)
    assert "capture lock" in (busy.skip_message or "")


def test_a_tick_lands_a_commit_made_while_it_watches(env: Any) -> None:
    # The daemon starts a tick only every 5 s; a tick that watches the WAL lands a commit made
    # after it started and asks for its apply run at once, not on the next tick.
    dsn, resources, instance = env
    assert lake_seed_job.execute_in_process(resources=resources, instance=instance).success

    def edit() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("update ledger.stripe_charges set description = 'late' where id = "
                         "(select min(id) from ledger.stripe_charges)")  # fmt: skip

    watching = {**resources, "sensor_wait": SensorWaitResource(seconds=30, poll_seconds=0.05)}
    commit = threading.Timer(0.5, edit)
    started = time.monotonic()
    commit.start()
    try:
        request = tick(cdc_capture_sensor, instance, watching)
    finally:
        commit.join()
    assert time.monotonic() - started < 15  # it returned on the commit, not at 30 s
    assert isinstance(request, dg.RunRequest)
    assert request.tags["ledger/lsn_to"] != request.tags["ledger/lsn_from"]
    # With nothing committed, a watching tick ends empty at its deadline.
    assert lake_apply_job.execute_in_process(resources=resources, instance=instance).success
    quiet = {**resources, "sensor_wait": SensorWaitResource(seconds=0.3, poll_seconds=0.05)}
    assert isinstance(tick(cdc_capture_sensor, instance, quiet), dg.SkipReason)


def test_materializing_a_partition_rebuilds_it_from_postgres(env: Any) -> None:
    dsn, resources, instance = env
    with psycopg.connect(dsn) as conn:
        tenant, day = conn.execute(
            "select c.tenant_id, (c.created at time zone t.time_zone)::date "
            "from ledger.stripe_charges c join ledger.tenants t using (tenant_id) limit 1"
        ).fetchone()  # type: ignore[misc]
    instance.add_dynamic_partitions("tenants", [str(tenant)])
    key = dg.MultiPartitionKey({"date": day.isoformat(), "tenant": str(tenant)})
    charges = next(a for a in LAKE_ASSETS if a.key == lake_asset_key("stripe_charges"))
    result = dg.materialize([charges], partition_key=key, resources=resources, instance=instance)
    assert result.success
    metadata = result.asset_materializations_for_node(charges.node_def.name)[0].metadata
    assert metadata["dagster/row_count"].value >= 1


def test_slot_health_check_fails_closed_when_the_slot_is_gone(env: Any) -> None:
    dsn, resources, instance = env
    assert lake_seed_job.execute_in_process(resources=resources, instance=instance).success
    healthy = slot_is_healthy(resources["postgres"], resources["lake"])
    assert healthy.passed
    assert healthy.metadata["wal_status"].value in {"reserved", "extended"}
    with psycopg.connect(dsn, autocommit=True) as conn:
        slots.drop_slot(conn, resources["lake"].slot_name)
    broken = slot_is_healthy(resources["postgres"], resources["lake"])
    assert not broken.passed
    assert broken.severity == dg.AssetCheckSeverity.ERROR
    assert "replication slot is missing" in (broken.description or "")


def test_compaction_prunes_the_change_log_up_to_every_readers_position(
    env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn, resources, instance = env
    lake: LakeResource = resources["lake"]
    assert lake_seed_job.execute_in_process(resources=resources, instance=instance).success
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("update ledger.stripe_charges set description = 'x' where id = "
                     "(select min(id) from ledger.stripe_charges)")  # fmt: skip
    assert isinstance(tick(cdc_capture_sensor, instance, resources), dg.RunRequest)
    assert lake_apply_job.execute_in_process(resources=resources, instance=instance).success
    assert list_batches(lake.changelog_dir)
    monkeypatch.setattr(jobs, "CHANGELOG_RETENTION_S", 0)
    recon = ReconciliationResource(state_dir=str(tmp_path / "state"))
    # Reconciliation's last cycle is still at the first batch's start: nothing past it goes.
    first = list_batches(lake.changelog_dir)[0]
    write_incremental_state(recon.root, IncrementalState(last_watermark=str(first.start)))
    compaction = {**resources, "reconciliation": recon}
    assert lake_compaction_job.execute_in_process(resources=compaction, instance=instance).success
    assert list_batches(lake.changelog_dir)[0] == first
    write_incremental_state(recon.root, IncrementalState(last_watermark=None))
    assert lake_compaction_job.execute_in_process(resources=compaction, instance=instance).success
    watermark = read_lake_state(lake.layout).applied_end
    assert watermark is not None
    assert all(ref.end > watermark for ref in list_batches(lake.changelog_dir))
