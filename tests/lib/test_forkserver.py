"""The fork server (lib/forkserver.py): a warm process forks a child per command, and the child
behaves as a process the caller started itself: argv, environment, directory, pipes, exit code
and signals. Everything here runs real processes over a real Unix socket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger_assets.lib.forkserver import (
    SCRIPT,
    ForkServer,
    ForkServerUnavailableError,
    call,
    spawn,
)

ROOT = Path(__file__).resolve().parents[2]
MODULE = "tests.lib.forkserver_entry"
SOCKET_ENV = "TEST_FORKSERVER"


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def _start(watch: tuple[str, ...] = ()) -> ForkServer:
    return ForkServer.start(
        preload=[MODULE], entry="ledger_assets.lib.forkserver:run_module_main", watch=watch,
        env=_env(), cwd=str(ROOT),
    )  # fmt: skip


@pytest.fixture
def server() -> Iterator[ForkServer]:
    started = _start()
    try:
        yield started
    finally:
        started.stop()


def _client(socket_path: str | None, *args: str, **popen: object) -> subprocess.Popen[str]:
    """The client as dagster-dbt starts it: ``python forkserver.py call-or-exec ...``."""
    env = _env(X="42")
    if socket_path is not None:
        env[SOCKET_ENV] = socket_path
    command = [sys.executable, str(SCRIPT), "call-or-exec", SOCKET_ENV, MODULE, *args]
    return subprocess.Popen(command, env=env, text=True, **popen)  # type: ignore[call-overload,no-any-return]


def _children(server: ForkServer) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(server.process.pid)], capture_output=True)
    return [int(pid) for pid in found.stdout.split()]


def test_a_forked_command_gets_the_callers_argv_environment_directory_and_pipes(
    server: ForkServer, tmp_path: Path
) -> None:
    client = _client(
        server.socket_path, "echo", "a", "--b=1", cwd=tmp_path,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = client.communicate("from stdin", timeout=30)
    assert client.returncode == 0, err
    assert out.strip() == (f"args=['a', '--b=1'] cwd={tmp_path} X=42 stdin='from stdin' warm=True")


def test_exit_codes_come_back(server: ForkServer) -> None:
    for code in (0, 3):
        client = _client(server.socket_path, "exit", str(code))
        assert client.wait(timeout=30) == code
    # A command that raises SystemExit("...") prints it and exits 1, as Python does.
    client = _client(server.socket_path, "nonsense", stderr=subprocess.PIPE)
    _, err = client.communicate(timeout=30)
    assert client.returncode == 1
    assert "unknown command nonsense" in err


def test_sigint_to_the_client_interrupts_the_command(server: ForkServer) -> None:
    # dagster-dbt interrupts dbt with SIGINT to its process, which is the client.
    client = _client(server.socket_path, "sleep", "60", stdout=subprocess.PIPE)
    assert client.stdout is not None
    assert client.stdout.readline().strip() == "sleeping"
    started = time.monotonic()
    client.send_signal(signal.SIGINT)
    assert client.wait(timeout=10) == 128 + signal.SIGINT
    assert time.monotonic() - started < 5
    assert _children(server) == []


def test_a_killed_client_takes_its_command_with_it(server: ForkServer) -> None:
    client = _client(server.socket_path, "sleep", "60", stdout=subprocess.PIPE)
    assert client.stdout is not None
    assert client.stdout.readline().strip() == "sleeping"
    assert len(_children(server)) == 1
    client.kill()
    client.wait()
    deadline = time.monotonic() + 10
    while _children(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _children(server) == []
    # The server itself carries on.
    assert _client(server.socket_path, "exit", "0").wait(timeout=30) == 0


def test_without_a_server_the_command_runs_cold(tmp_path: Path) -> None:
    for socket_path in (None, str(tmp_path / "nobody-listens")):
        client = _client(socket_path, "echo", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        out, _ = client.communicate(timeout=60)
        assert client.returncode == 0
        assert out.strip().endswith("warm=False")


def test_changed_code_is_never_run_warm(tmp_path: Path) -> None:
    watched = tmp_path / "project.yml"
    watched.write_text("v1")
    (tmp_path / "target").mkdir()
    stale = _start(watch=(str(tmp_path / "*.yml"),))
    try:
        assert call(stale.socket_path, [MODULE, "exit", "0"]) == 0
        # What the globs leave out may change freely.
        (tmp_path / "target" / "manifest.json").write_text("{}")
        assert call(stale.socket_path, [MODULE, "exit", "0"]) == 0
        watched.write_text("v2")
        os.utime(watched, ns=(time.time_ns() + 10**9,) * 2)
        with pytest.raises(ForkServerUnavailableError, match="stale"):
            call(stale.socket_path, [MODULE, "exit", "0"])
        # It exits rather than serve old code (removing its socket's folder); the client falls
        # back to a fresh process.
        assert stale.process.wait(timeout=10) == 0
        assert not os.path.exists(os.path.dirname(stale.socket_path))
        client = _client(stale.socket_path, "echo", stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE)  # fmt: skip
        assert client.communicate(timeout=60)[0].strip().endswith("warm=False")
    finally:
        stale.stop()


def test_a_malformed_request_is_refused_and_the_server_carries_on(server: ForkServer) -> None:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(server.socket_path)
        payload = b'{"argv": "not a list"}'
        socket.send_fds(sock, [len(payload).to_bytes(4, "big") + payload], [0, 1, 2])
        reply = sock.recv(4096).decode()
    assert reply.startswith("error ")
    assert "argv" in reply
    assert server.alive()
    assert call(server.socket_path, [MODULE, "exit", "0"]) == 0


def test_a_spawned_command_runs_on_its_own(server: ForkServer, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with open(os.devnull) as null:
        pid = spawn(
            server.socket_path, [MODULE, "touch", str(marker)], _env(), str(tmp_path),
            stdio=(null.fileno(), 1, 2),
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.read_text() == str(pid)


def test_stopping_the_server_stops_its_commands(server: ForkServer) -> None:
    client = _client(server.socket_path, "sleep", "60", stdout=subprocess.PIPE)
    assert client.stdout is not None
    assert client.stdout.readline().strip() == "sleeping"
    server.stop(timeout=10)
    assert server.process.returncode == 0
    assert client.wait(timeout=10) == -signal.SIGTERM
    with pytest.raises(ForkServerUnavailableError):
        call(server.socket_path, [MODULE, "exit", "0"])


def test_a_server_that_cannot_import_its_program_says_so() -> None:
    with pytest.raises(ForkServerUnavailableError, match="did not start"):
        ForkServer.start(preload=["no_such_module_here"], entry="os:getpid", env=_env())


def test_the_server_outlives_no_owner() -> None:
    # Owned by a short-lived process: when it exits, the server drains and exits too.
    code = (
        "from ledger_assets.lib.forkserver import ForkServer; "
        f"s = ForkServer.start(preload=[{MODULE!r}], "
        "entry='ledger_assets.lib.forkserver:run_module_main'); print(s.process.pid)"
    )
    owner = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, check=True,
        timeout=60,
    )  # fmt: skip
    pid = int(owner.stdout.split()[-1])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    pytest.fail("the fork server kept running after its owner exited")


def test_a_retired_server_finishes_its_commands_then_exits(server: ForkServer) -> None:
    client = _client(server.socket_path, "sleep", "2", stdout=subprocess.PIPE)
    assert client.stdout is not None
    assert client.stdout.readline().strip() == "sleeping"
    server.retire()
    time.sleep(0.3)  # the server takes the signal on its next wake-up
    with pytest.raises(ForkServerUnavailableError):
        call(server.socket_path, [MODULE, "exit", "0"])
    # The running command was not interrupted: it ends normally, and then the server exits,
    # leaving no socket or folder behind.
    assert client.wait(timeout=30) == 0
    assert server.process.wait(timeout=10) == 0
    assert not os.path.exists(os.path.dirname(server.socket_path))
