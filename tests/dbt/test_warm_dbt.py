"""The marts' dbt through the warm dbt server (lib.marts.project.start_dbt_server): with
``LEDGER_DBT_FORKSERVER`` set, the command that dagster-dbt and the marts helpers start is a
fork of the server, with dbt's output and exit code; without it, a new process."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from ledger_assets.defs.dbt.resources import DBT_PROJECT_DIR, dbt_cli
from ledger_assets.lib.marts.project import (
    DBT_FORKSERVER_ENV,
    dbt_runner_command,
    run_dbt_process,
    start_dbt_server,
)


def _children(pid: int) -> set[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return {int(p) for p in found.stdout.split()}


def test_dagster_dbt_starts_the_runner_command() -> None:
    resource = dbt_cli()
    assert [resource.dbt_executable, *resource.global_config_flags] == dbt_runner_command()


def test_dbt_runs_as_a_fork_of_the_warm_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_dbt_server()
    try:
        monkeypatch.setenv(DBT_FORKSERVER_ENV, server.socket_path)
        seen: set[int] = set()
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                seen.update(_children(server.process.pid))
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            # `dbt ls` parses the project and lists it: the same runner the marts asset uses.
            result = run_dbt_process(
                ["ls", "--resource-type", "model", "--output", "name"], DBT_PROJECT_DIR,
                tmp_path, target_path=tmp_path / "target", timeout=300,
            )  # fmt: skip
        finally:
            done.set()
            watcher.join()
        assert result.returncode == 0, result.stdout[-2000:]
        assert "daily_pnl" in result.stdout.split()
        # The work ran in a child of the server, not in a process of its own.
        assert seen, "the dbt command never ran as a child of the warm server"
        # dbt's own exit code comes back through the server: 2, dbt could not run the command.
        failed = run_dbt_process(["ls", "--no-such-option"], DBT_PROJECT_DIR, tmp_path,
                                 target_path=tmp_path / "target", timeout=300)  # fmt: skip
        assert failed.returncode == 2, failed.stdout[-2000:]
    finally:
        server.stop()
