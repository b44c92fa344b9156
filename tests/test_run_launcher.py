"""ForkServerRunLauncher (ledger_assets/defs/launcher.py): runs start as forks of a warm
process, on a real instance, through Dagster's own `dagster api execute_run`."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from ledger_assets.defs.launcher import WORKER_PID_TAG, WORKER_START_TAG
from tests.launcher_location import mark_job

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    watched = tmp_path / "watched"
    watched.write_text("v1")
    overrides = {
        "run_launcher": {
            "module": "ledger_assets.defs.launcher",
            "class": "ForkServerRunLauncher",
            # An absolute glob; relative ones start at the code location's working directory.
            "config": {"warm_dbt": False, "watch": [str(watched)]},
        }
    }
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(overrides=overrides, temp_dir=str(tmp_path / "home")) as inst:
        yield inst


def _launch(instance: dg.DagsterInstance, folder: Path, seconds: float = 0.0) -> dg.DagsterRun:
    origin = dg.reconstructable(mark_job).get_python_origin()
    # The origin's working directory makes `tests.launcher_location` importable in the worker.
    origin = origin._replace(
        repository_origin=origin.repository_origin._replace(
            code_pointer=origin.repository_origin.code_pointer._replace(working_directory=str(ROOT))
        )
    )
    run = instance.create_run_for_job(
        job_def=mark_job,
        run_config={"ops": {"mark": {"config": {"folder": str(folder), "seconds": seconds}}}},
        job_code_origin=origin,
    )
    instance.launch_run(run.run_id, workspace=None)  # type: ignore[arg-type]
    return run


def _wait(
    instance: dg.DagsterInstance, run_id: str, statuses: set[dg.DagsterRunStatus], timeout=120.0
) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        if run.status in statuses:
            return run
        time.sleep(0.1)
    pytest.fail(f"run {run_id} never reached {statuses}; it is {run.status}")


FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def test_runs_are_forked_from_one_warm_worker_server(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    parents = []
    for _ in range(3):
        run = _launch(instance, tmp_path)
        done = _wait(instance, run.run_id, FINISHED)
        assert done.status == dg.DagsterRunStatus.SUCCESS
        assert done.tags[WORKER_START_TAG] == "fork"
        worker = int(done.tags[WORKER_PID_TAG])
        parents.append(int((tmp_path / f"{worker}.pid").read_text()))
    # Every worker is a child of the same server, not of the launcher (cold) or of each other.
    assert len(set(parents)) == 1
    assert parents[0] != os.getpid()


def test_a_change_on_disk_renews_the_server(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    first = _wait(instance, _launch(instance, tmp_path).run_id, FINISHED)
    watched = tmp_path / "watched"
    watched.write_text("v2")
    os.utime(watched, ns=(time.time_ns() + 10**9,) * 2)
    second = _wait(instance, _launch(instance, tmp_path).run_id, FINISHED)
    assert second.status == dg.DagsterRunStatus.SUCCESS
    assert second.tags[WORKER_START_TAG] == "fork"
    old, new = (
        int((tmp_path / f"{run.tags[WORKER_PID_TAG]}.pid").read_text()) for run in (first, second)
    )
    assert old != new


def test_terminate_interrupts_the_run(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    run = _launch(instance, tmp_path, seconds=120)
    _wait(instance, run.run_id, {dg.DagsterRunStatus.STARTED})
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("*.pid")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert instance.run_launcher.terminate(run.run_id)
    assert _wait(instance, run.run_id, FINISHED, timeout=60).status == dg.DagsterRunStatus.CANCELED


def test_a_code_location_that_cannot_load_fails_the_run_cold(
    instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker server cannot import a broken location; the run starts cold and Dagster
    # reports the import error on it, instead of the launch failing silently.
    broken = tmp_path / "broken_location.py"
    broken.write_text("raise ImportError('this code location is broken')\n")
    origin = dg.reconstructable(mark_job).get_python_origin()
    pointer = origin.repository_origin.code_pointer._replace(
        module="broken_location", working_directory=str(tmp_path)
    )
    origin = origin._replace(
        repository_origin=origin.repository_origin._replace(code_pointer=pointer)
    )
    run = instance.create_run_for_job(
        job_def=mark_job,
        run_config={"ops": {"mark": {"config": {"folder": str(tmp_path)}}}},
        job_code_origin=origin,
    )
    instance.launch_run(run.run_id, workspace=None)  # type: ignore[arg-type]
    done = _wait(instance, run.run_id, FINISHED)
    assert done.status == dg.DagsterRunStatus.FAILURE
    assert done.tags[WORKER_START_TAG] == "cold"
