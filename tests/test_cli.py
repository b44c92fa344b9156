"""The `ledger` command as a user runs it: one line of error, exit status 2."""

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger_assets.lib.sor.migrate import discover
from ledger_assets.lib.sor.pgcluster import find_free_port
from tests.conftest import world_searchable_tmpdir


def ledger(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ledger_assets.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def state_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    monkeypatch.delenv("LEDGER_PG_DSN", raising=False)
    state = world_searchable_tmpdir("ledger-test-state-")
    env = {"LEDGER_STATE_DIR": str(state), "LEDGER_PG_PORT": str(find_free_port())}
    yield env
    ledger("db", "stop", env=env)
    shutil.rmtree(state, ignore_errors=True)


def test_private_cluster_lifecycle_and_idempotent_migrate(state_env: dict[str, str]) -> None:
    assert ledger("db", "status", env=state_env).returncode == 3
    started = ledger("db", "start", env=state_env)
    assert started.returncode == 0, started.stderr
    assert "private Postgres running" in started.stdout
    assert ledger("db", "status", env=state_env).returncode == 0
    first = ledger("migrate", env=state_env)
    assert first.returncode == 0, first.stderr
    assert f"applied {len(discover())} migration(s)" in first.stdout
    second = ledger("migrate", env=state_env)
    assert (second.returncode, second.stdout.strip()) == (0, "up to date")
    dsn = ledger("db", "dsn", env=state_env).stdout.strip()
    assert dsn.startswith("postgresql://ledger:")
    assert ledger("db", "stop", env=state_env).returncode == 0
    assert ledger("db", "status", env=state_env).returncode == 3


def test_wrong_dsn_is_one_line_and_status_2(state_env: dict[str, str]) -> None:
    env = {**state_env, "LEDGER_PG_DSN": f"postgresql://x:y@127.0.0.1:{find_free_port()}/z"}
    result = ledger("migrate", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("ledger: cannot connect to Postgres")
    assert result.stderr.count("\n") == 1


def test_bad_port_setting_is_one_line(state_env: dict[str, str]) -> None:
    result = ledger("db", "start", env={**state_env, "LEDGER_PG_PORT": "not-a-port"})
    assert (result.returncode, result.stderr.count("\n")) == (2, 1)
    assert "LEDGER_PG_PORT" in result.stderr


def test_unreachable_state_dir_as_root_is_explained(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root runs the server as another account")
    result = ledger(
        "db",
        "start",
        env={"LEDGER_STATE_DIR": str(tmp_path / "s"), "LEDGER_PG_PORT": str(find_free_port())},
    )
    assert result.returncode == 2
    assert "not searchable by 'nobody'" in result.stderr
