"""The local instance's event log (``defs/event_storage.py``), as ``dagster.yaml`` configures it."""

import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from bench.core import local_instance
from ledger_assets.defs.event_storage import OPEN_SHARDS, PooledSqliteEventLogStorage


@dg.asset
def counted(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    context.log.info("one line")
    return dg.MaterializeResult(metadata={"pid": os.getpid()})


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    # Entered: runs then resolve Dagster's current state storage to this instance, whatever an
    # earlier test left in that context variable.
    with local_instance(tmp_path / "home") as entered:
        yield entered


def test_dagster_yaml_uses_the_pooled_event_log(instance: dg.DagsterInstance) -> None:
    assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)


def test_runs_events_and_materializations_are_recorded_and_read_back(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    runs = [dg.materialize([counted], instance=instance) for _ in range(OPEN_SHARDS + 3)]
    assert all(r.success for r in runs)
    storage = instance.event_log_storage
    assert isinstance(storage, PooledSqliteEventLogStorage)
    # More runs than shards kept open: the oldest were closed, and still read back.
    assert len(storage._engines) <= OPEN_SHARDS
    first = instance.all_logs(runs[0].run_id)
    assert any(e.user_message == "one line" for e in first)
    key = dg.AssetKey("counted")
    assert len(instance.fetch_materializations(key, limit=100).records) == len(runs)
    # Another process's instance (the webserver, the daemon) reads the same files.
    with local_instance(tmp_path / "home") as reader:
        assert len(reader.fetch_materializations(key, limit=100).records) == len(runs)
        assert [e.user_message for e in reader.all_logs(runs[0].run_id)] == [
            e.user_message for e in first
        ]


def test_a_forked_child_records_through_its_own_connections(instance: dg.DagsterInstance) -> None:
    # The parent has open connections (as a warm server would) when it forks a run worker.
    assert dg.materialize([counted], instance=instance).success
    pid = os.fork()
    if pid == 0:  # the child: record a run, then leave without running the parent's cleanup
        code = 0 if dg.materialize([counted], instance=instance).success else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's connections still work, and both processes' runs are there.
    assert dg.materialize([counted], instance=instance).success
    records = instance.fetch_materializations(dg.AssetKey("counted"), limit=10).records
    pids = {r.asset_materialization.metadata["pid"].value for r in records}  # type: ignore[union-attr]
    assert pids == {os.getpid(), pid}
