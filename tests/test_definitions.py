"""The code location loads, in-process and through the Dagster webserver's GraphQL API."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from ledger_assets.lib.sor.catalog import MIRRORED_TABLES
from ledger_assets.lib.sor.pgcluster import find_free_port

ROOT = Path(__file__).resolve().parent.parent

# Notices Dagster itself prints on every `dagster dev` start, whatever the code location holds.
DAGSTER_OWN_NOTICES = (
    # The CLI recommends `dg dev`; the design card asks for `dagster dev`.
    "Function `dev_command` is superseded",
    "return callback(*args, **kwargs)",  # the source line printed under that notice
    "No cursor for event type",  # the event-log consumer on a brand-new instance
)

LOCATION_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message }
          ... on RepositoryLocation {
            repositories {
              assetNodes { assetKey { path } }
              sensors { name sensorState { status ticks(limit: 1) { status } } }
            }
          }
        }
      }
    }
  }
}
"""


def test_definitions_load_without_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_PG_DSN", "postgresql://unused")
    sys.modules.pop("ledger_assets.definitions", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from ledger_assets.definitions import defs
    keys = {tuple(k.path) for k in defs.resolve_all_asset_keys()}
    assert {("sor", t.name) for t in MIRRORED_TABLES} <= keys
    dg.Definitions.validate_loadable(defs)


def test_every_job_runs_in_its_run_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """A launched run's worker process loads the whole code location (~3.5 s); Dagster's default
    multiprocess executor would start one more process per step that loads it again. Every job
    here is one step or a short sequence, so they all run in the worker."""
    monkeypatch.setenv("LEDGER_PG_DSN", "postgresql://unused")
    from ledger_assets.definitions import defs

    jobs = [job for job in defs.resolve_all_job_defs() if job.name != "__ASSET_JOB"]
    assert len(jobs) >= 9
    multiprocess = [job.name for job in jobs if job.executor_def is not dg.in_process_executor]
    assert multiprocess == []


def _graphql(port: int, query: str) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


@pytest.mark.slow
def test_dagster_dev_serves_the_code_location(tmp_path: Path, migrated_dsn: str) -> None:
    for name in ("dagster.yaml", "workspace.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    port = find_free_port()
    env = {
        **os.environ,
        "LEDGER_PG_DSN": migrated_dsn,
        "LEDGER_LAKE_ROOT": str(tmp_path / "lake"),
        "LEDGER_STATE_DIR": str(tmp_path / "state"),
        "DAGSTER_HOME": str(tmp_path),
        # Nothing listens here: no test run pulls from these, but resources must resolve.
        "STRIPE_API_KEY": "sk_test_unused",
        "STRIPE_API_BASE": "http://127.0.0.1:9",
        "PLAID_HOST": "http://127.0.0.1:9",
        "PLAID_CLIENT_ID": "unused",
        "PLAID_SECRET": "unused",
    }
    log = tmp_path / "dagster-dev.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-p", str(port), "-h", "127.0.0.1"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed whole if it hangs
        )
    try:
        deadline = time.monotonic() + 120
        entries: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            try:
                data = _graphql(port, LOCATION_QUERY)
                entries = data["data"]["workspaceOrError"]["locationEntries"]  # type: ignore[index]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    break
            except OSError:
                pass
            assert server.poll() is None, log.read_text()
            time.sleep(1)
        assert [e["name"] for e in entries] == ["ledger_assets"]
        location = entries[0]["locationOrLoadError"]
        assert location["__typename"] == "RepositoryLocation", location  # type: ignore[index]
        repo = location["repositories"][0]  # type: ignore[index]
        asset_paths = {tuple(n["assetKey"]["path"]) for n in repo["assetNodes"]}
        assert ("sor", "stripe_charges") in asset_paths
        assert {"tenant_registry_sensor"} <= {s["name"] for s in repo["sensors"]}
        # Stop between daemon passes, not in one: the daemon evaluates sensors in threads
        # (dagster.yaml), and a tick still submitting its run while `dagster dev` shuts the
        # workspace down logs "Location ... does not exist in workspace".
        while time.monotonic() < deadline and not _first_sensor_ticks_ended(repo):
            time.sleep(0.2)
            data = _graphql(port, LOCATION_QUERY)
            location = data["data"]["workspaceOrError"]["locationEntries"][0]  # type: ignore[index]
            repo = location["locationOrLoadError"]["repositories"][0]
        assert _first_sensor_ticks_ended(repo), repo
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            # Fail, but leave no webserver, daemon or code server running behind.
            os.killpg(server.pid, signal.SIGKILL)
            raise
    unexpected = [
        line
        for line in log.read_text().splitlines()
        if ("warning" in line.lower() or "error" in line.lower())
        and not any(known in line for known in DAGSTER_OWN_NOTICES)
    ]
    assert unexpected == []


def _first_sensor_ticks_ended(repo: Any) -> bool:
    """Every running sensor of ``repo`` (LOCATION_QUERY's shape) has ticked, and its latest
    tick is over (not ``STARTED``)."""
    states = [s["sensorState"] for s in repo["sensors"]]
    running = [state for state in states if state["status"] == "RUNNING"]
    return all(state["ticks"] and state["ticks"][0]["status"] != "STARTED" for state in running)


@pytest.mark.parametrize("config", ["dagster.yaml", "docs/deploy/dagster.yaml"])
def test_instance_configs_are_valid(
    config: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The instance-config validator has no public API; DagsterInstance.from_config would also
    # try to reach the production Postgres.
    from dagster._core.instance.config import dagster_instance_config

    monkeypatch.setenv("DAGSTER_PG_URL", "postgresql://user:secret@db.internal/dagster")
    monkeypatch.setenv("LEDGER_S3_BUCKET", "ledger-lake")
    shutil.copy(ROOT / config, tmp_path / "dagster.yaml")
    settings, _ = dagster_instance_config(str(tmp_path))
    assert settings["run_coordinator"]["class"] == "QueuedRunCoordinator"
    # Each queued run of the dispute -> lake -> marts chain waits for a dequeue pass.
    assert settings["run_coordinator"]["config"]["dequeue_interval_seconds"] <= 1
    # Its sensors watch for most of a daemon pass: in a serial loop they would hold up the rest.
    assert settings["sensors"]["use_threads"] is True
    # Run workers fork from a warm server that is renewed when the dbt project changes.
    assert settings["run_launcher"]["class"] == "ForkServerRunLauncher"
    watch = settings["run_launcher"]["config"]["watch"]
    assert "dbt_project/models/**" in watch
    assert not any("target" in w or "logs" in w for w in watch)


def test_production_instance_runs_on_postgres(
    tmp_path: Path, migrated_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The deploy config as written, on a real Postgres: dagster-postgres is installed and the
    # documented URL form (psycopg2 named) writes and reads events.
    assert migrated_dsn.startswith("postgresql://")
    monkeypatch.setenv(
        "DAGSTER_PG_URL", migrated_dsn.replace("postgresql", "postgresql+psycopg2", 1)
    )
    monkeypatch.setenv("LEDGER_S3_BUCKET", "ledger-lake")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    shutil.copy(ROOT / "docs/deploy/dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert type(instance.run_launcher).__name__ == "ForkServerRunLauncher"
        key = dg.AssetKey(["lake", "stripe_charges"])
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key))
        records = instance.fetch_materializations(key, limit=1).records
        assert len(records) == 1
    finally:
        instance.dispose()


def test_marts_schedule_waits_for_the_lake_builds_everything_once_then_the_last_week(
    tmp_path: Path,
) -> None:
    from datetime import UTC, datetime

    from dagster._core.storage.dagster_run import DagsterRun

    from ledger_assets.defs.dbt.schedules import marts_schedule
    from ledger_assets.defs.resources import LakeResource
    from ledger_assets.lib.cdc.lsn import Lsn
    from ledger_assets.lib.lake.sync import LakeState, write_lake_state

    at = datetime(2026, 3, 8, 23, 55, tzinfo=UTC)
    lake = LakeResource(root=str(tmp_path / "lake"))

    def tick(instance: dg.DagsterInstance) -> object:
        return marts_schedule(
            dg.build_schedule_context(
                instance=instance, scheduled_execution_time=at, resources={"lake": lake}
            )
        )

    with dg.instance_for_test() as instance:
        assert isinstance(tick(instance), dg.SkipReason), "nothing while the lake is not seeded"
        write_lake_state(lake.layout, LakeState(applied_end=Lsn(5), seeded_lsn=Lsn(9)))
        assert isinstance(tick(instance), dg.SkipReason), "nothing while it is seeding"
        write_lake_state(lake.layout, LakeState(applied_end=Lsn(10), seeded_lsn=Lsn(9)))
        first = tick(instance)
        assert isinstance(first, list)
        assert [r.tags.get("ledger/marts") for r in first] == ["full_refresh"]
        assert first[0].partition_key == "2026-03-08"
        # Once a build succeeded: the last week in one range run, unless one is still queued.
        instance.add_run(
            DagsterRun(
                job_name="marts_job",
                run_id="a" * 36,
                status=dg.DagsterRunStatus.SUCCESS,
                tags={"ledger/marts": "full_refresh"},
            )
        )
        current = tick(instance)
        assert isinstance(current, list)
        assert current[0].partition_key_range == dg.PartitionKeyRange("2026-03-02", "2026-03-08")
        instance.add_run(
            DagsterRun(
                job_name="marts_job", run_id="b" * 36, status=dg.DagsterRunStatus.NOT_STARTED,
                tags=current[0].tags,
            )
        )  # fmt: skip
        assert tick(instance) == []
