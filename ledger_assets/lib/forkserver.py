"""A fork server: a process that imports a program once, then forks a child per command.

Why: on this project's two cores a Python process that imports dbt takes ~3.2 s before it does
any work, and one that loads the Dagster code location ~6 s. Every marts run starts dbt, and
every Dagster run starts a worker, so a late dispute's dispute -> lake -> marts chain spent most
of its time importing. A fork of a process that has already imported everything starts in
milliseconds. This is the "zygote" pattern of ``multiprocessing``'s forkserver and of Android,
for whole programs: neither dbt Core nor Dagster offers a resident worker (dbt's RPC server was
removed; Dagster's run launchers start a fresh interpreter per run).

The server (``python ledger_assets/lib/forkserver.py serve ...``) imports ``--preload``
modules, runs ``--prepare`` hooks (to build caches the children inherit), then listens on a
Unix socket. A request carries argv, environment and working directory, and the client's
stdin/stdout/stderr as file descriptors (``SCM_RIGHTS``). The server forks; the child takes
those descriptors, environment and directory, and calls the ``--entry`` function with argv. So
the child behaves like a new process the client started, with the client's pipes, while the
client relays signals to it and exits with its exit code (``call``). A detached request
(``spawn``) returns the child's pid at once instead.

Stale code is never run: each request first compares the modification times of every module
the server has imported, and of the files matching the ``--watch`` globs, with those at start;
on any change the server answers ``stale`` and exits, and the caller falls back to a fresh
process.

SIGTERM or SIGINT stops a server: its running commands get the same signal and are awaited.
SIGUSR1 retires it, as does its owner's exit: it takes no new commands and exits when the
running ones have finished.

The server is single-threaded (forking a multi-threaded process can deadlock the child) and
stdlib-only, so that the client side, run as a script (``python .../forkserver.py call``),
starts in ~30 ms without importing the ``ledger_assets`` package. It never imports Dagster.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: The file the client side runs as a script.
SCRIPT = Path(__file__).resolve()
#: Largest request accepted (argv + environment as JSON).
MAX_REQUEST_BYTES = 4 * 1024 * 1024
#: The client's stdin, stdout and stderr travel with the request.
STDIO = (0, 1, 2)
#: Tells a server to retire: no new commands, exit when the running ones have finished.
RETIRE_SIGNAL = signal.SIGUSR1
#: The private temporary folder that holds a started server's socket.
_FOLDER_PREFIX = "ledger-fork-"


class ForkServerUnavailableError(RuntimeError):
    """The server is not running, is not reachable, or its code changed since it started."""


# ---------------------------------------------------------------------------------------------
# Protocol: one request (4-byte length + JSON, with the stdio descriptors attached), then lines.
#   server -> client: "pid <n>", then (unless detached) "exit <code>"; or "stale", "error <msg>"
#   client -> server: "signal <n>" (relayed to the child); closing the connection kills it.
# ---------------------------------------------------------------------------------------------


def _send_request(sock: socket.socket, request: Mapping[str, object], fds: Sequence[int]) -> None:
    payload = json.dumps(request).encode()
    message = len(payload).to_bytes(4, "big") + payload
    try:
        # The descriptors ride on the first chunk; the rest of a large environment follows.
        sent = socket.send_fds(sock, [message[:65536]], list(fds))
        if sent < len(message):
            # Not sendall(b""): it still calls send(), which fails with EPIPE when the server
            # has already read the whole request, answered (say, "stale") and closed.
            sock.sendall(message[sent:])
    except OSError as error:
        # The server went away (stopping, or stale) before it took the request: nothing ran.
        sock.close()
        raise ForkServerUnavailableError(
            f"the fork server did not take the request: {error}"
        ) from error


def _receive_request(conn: socket.socket) -> tuple[dict[str, object], list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(conn, 65536, len(STDIO))
    try:
        return _parse_request(conn, data), _checked_stdio(fds)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _parse_request(conn: socket.socket, data: bytes) -> dict[str, object]:
    if len(data) < 4:
        raise ValueError("truncated request")
    size = int.from_bytes(data[:4], "big")
    if size > MAX_REQUEST_BYTES:
        raise ValueError(f"request of {size} bytes is over the limit")
    buffer = bytearray(data[4:])
    while len(buffer) < size:
        chunk = conn.recv(size - len(buffer))
        if not chunk:
            raise ValueError("truncated request")
        buffer += chunk
    request = json.loads(buffer)
    if not (
        isinstance(request, dict)
        and isinstance(request.get("argv"), list)
        and request["argv"]
        and isinstance(request.get("env"), dict)
        and isinstance(request.get("cwd"), str)
    ):
        raise ValueError("a request needs argv (non-empty list), env (object) and cwd (string)")
    return request


def _checked_stdio(fds: list[int]) -> list[int]:
    if len(fds) != len(STDIO):
        raise ValueError(f"a request carries {len(STDIO)} descriptors (stdin, stdout, stderr)")
    return fds


def _lines(sock: socket.socket) -> Iterator[str]:
    """The server's reply lines, until it closes the connection."""
    pending = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.decode()


def _connect(socket_path: str, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(socket_path)
    except OSError as error:
        sock.close()
        raise ForkServerUnavailableError(f"no fork server at {socket_path}: {error}") from error
    return sock


def _first_reply(sock: socket.socket, lines: Iterator[str]) -> int:
    """The child's pid, or the reason there is none."""
    reply = next(lines, "error the server closed the connection")
    if reply.startswith("pid "):
        return int(reply.split()[1])
    sock.close()
    raise ForkServerUnavailableError(f"fork server refused the command: {reply}")


# ---------------------------------------------------------------------------------------------
# Client side
# ---------------------------------------------------------------------------------------------


def call(socket_path: str, argv: Sequence[str]) -> int:
    """Run ``argv`` in a fork of the server with this process's stdio, environment and working
    directory (``argv[0]`` is the program; the entry gets all of ``argv``). Relays SIGINT and
    SIGTERM to it and returns its exit code (negative: killed by that signal). Raises
    ``ForkServerUnavailableError``, before anything ran, if the server cannot run it.
    """
    request = {
        "argv": list(argv),
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "detach": False,
    }
    sock = _connect(socket_path)
    lines = _lines(sock)
    # Relayed from before the request goes out: a signal that arrives before the child's pid
    # is known waits, instead of killing this process and leaving the command orphaned.
    pending: list[int] = []
    started = False

    def relay(signum: int, _frame: object) -> None:
        if not started:
            pending.append(signum)
            return
        with contextlib.suppress(OSError):
            sock.sendall(f"signal {signum}\n".encode())

    previous = {s: signal.signal(s, relay) for s in (signal.SIGINT, signal.SIGTERM)}
    with sock:
        try:
            _send_request(sock, request, STDIO)
            _first_reply(sock, lines)
        except ForkServerUnavailableError:
            # Nothing ran: the caller starts the command otherwise, and gets what came.
            for restored, handler in previous.items():
                signal.signal(restored, handler)
            for waited in pending:
                signal.raise_signal(waited)
            raise
        sock.settimeout(None)
        started = True
        for waited in pending:
            relay(waited, None)
        for line in lines:
            if line.startswith("exit "):
                code = int(line.split()[1])
                if code < 0:
                    # Killed by a signal: die of the same one, as the child did.
                    signal.signal(-code, signal.SIG_DFL)
                    os.kill(os.getpid(), -code)
                return code
    # The server died under the child: the command's outcome is unknown, so report failure.
    print(f"fork server {socket_path} went away while the command ran", file=sys.stderr)
    return 1


def spawn(
    socket_path: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: str,
    stdio: Sequence[int] = STDIO,
) -> int:
    """Start ``argv`` in a fork of the server and return its pid at once (it runs on; the
    server reaps it). ``stdio`` are the child's stdin, stdout and stderr."""
    request = {"argv": list(argv), "env": dict(env), "cwd": cwd, "detach": True}
    sock = _connect(socket_path)
    with sock:
        _send_request(sock, request, stdio)
        return _first_reply(sock, _lines(sock))


def call_or_exec(socket_env: str, fallback_module: str, args: Sequence[str]) -> int:
    """Run ``python -m fallback_module *args`` through the fork server named by the environment
    variable ``socket_env``, or, when there is none (or it cannot), exec it in this process."""
    socket_path = os.environ.get(socket_env)
    if socket_path:
        try:
            return call(socket_path, [fallback_module, *args])
        except ForkServerUnavailableError:
            pass  # start cold, exactly as without a server
    os.execv(sys.executable, [sys.executable, "-m", fallback_module, *args])


# ---------------------------------------------------------------------------------------------
# Server side
# ---------------------------------------------------------------------------------------------


def _resolve(reference: str) -> Callable[..., object]:
    module, _, name = reference.partition(":")
    function = getattr(importlib.import_module(module), name)
    if not callable(function):
        raise TypeError(f"{reference} is not callable")
    return function  # type: ignore[no-any-return]


def _source_mtimes(watch: Sequence[str]) -> dict[str, int]:
    """Modification times of every imported module's file and of every file matching a
    ``watch`` glob (``**`` recurses): a file that appears, disappears or changes is a change."""
    paths = {
        file
        for module in list(sys.modules.values())
        if isinstance(file := getattr(module, "__file__", None), str)
    }
    for pattern in watch:
        paths.update(glob.glob(pattern, recursive=True))
    mtimes = {}
    for path in paths:
        try:
            mtimes[path] = os.stat(path).st_mtime_ns
        except OSError:
            mtimes[path] = -1
    return mtimes


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    print(value, file=sys.stderr)  # SystemExit("message"), as the interpreter does
    return 1


def _run_child(entry: Callable[..., object], request: Mapping[str, object], fds: list[int]) -> int:
    """In the forked child: become the client's process, run the entry, return its exit code."""
    for signum, handler in (
        (signal.SIGCHLD, signal.SIG_DFL),
        (signal.SIGTERM, signal.SIG_DFL),
        (signal.SIGINT, signal.default_int_handler),
    ):
        signal.signal(signum, handler)
    signal.signal(RETIRE_SIGNAL, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    for target, fd in zip(STDIO, fds, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own stdio, never closed
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.chdir(str(request["cwd"]))
    env, argv = request["env"], request["argv"]
    assert isinstance(env, dict), "checked by _parse_request"
    assert isinstance(argv, list), "checked by _parse_request"
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in env.items()})
    argv = [str(a) for a in argv]
    sys.argv = argv
    try:
        return _exit_code(entry(argv))
    except SystemExit as done:
        return _exit_code(done.code)
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()


@dataclass
class _Server:
    listener: socket.socket
    entry: Callable[..., object]
    watch: list[str]
    owner_pid: int | None
    mtimes: dict[str, int] = field(default_factory=dict)
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    #: Running children: pid -> the client's connection (None once detached).
    children: dict[int, socket.socket | None] = field(default_factory=dict)
    accepting: bool = True
    #: The self-pipe that signals write to (SIGCHLD, SIGTERM), waking the selector.
    wake: tuple[int, int] = (-1, -1)

    def serve(self) -> None:
        self.wake = wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        os.set_blocking(wake_read, False)
        signal.set_wakeup_fd(wake_write)
        stop_signal: list[int] = []
        retire: list[int] = []

        def stop(signum: int, _frame: object) -> None:
            stop_signal.append(signum)

        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the selector through the pipe
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(RETIRE_SIGNAL, lambda signum, _frame: retire.append(signum))
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(wake_read, selectors.EVENT_READ, "wake")
        while self.accepting or self.children:
            for key, _ in self.selector.select(timeout=1.0):
                if key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_read, 4096)
                elif key.data == "accept":
                    self._accept()
                else:
                    self._from_client(key.fileobj, key.data)  # type: ignore[arg-type]
            self._reap()
            if stop_signal and self.accepting:
                # Stopped: no new commands; the running ones get the signal and are awaited.
                self._stop_accepting()
                for pid in self.children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, stop_signal[0])
            orphaned = self.owner_pid is not None and os.getppid() != self.owner_pid
            if (retire or orphaned) and self.accepting:
                # Retired, or the owner is gone: take no new commands and exit once the running
                # ones finish, as a run worker outlives a restarting daemon.
                self._stop_accepting()

    def _stop_accepting(self) -> None:
        self.accepting = False
        self.selector.unregister(self.listener)
        self.listener.close()

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(5.0)
        try:
            request, fds = _receive_request(conn)
        except (OSError, ValueError) as error:
            with contextlib.suppress(OSError):
                conn.sendall(f"error {error}\n".encode())
            conn.close()
            return
        try:
            if _source_mtimes(self.watch) != self.mtimes:
                conn.sendall(b"stale\n")
                conn.close()
                self._stop_accepting()
                return
            pid = self._fork(request, fds)
        finally:
            for fd in fds:
                os.close(fd)
        conn.sendall(f"pid {pid}\n".encode())
        if request.get("detach"):
            conn.close()
            self.children[pid] = None
        else:
            conn.setblocking(False)
            self.children[pid] = conn
            self.selector.register(conn, selectors.EVENT_READ, pid)

    def _fork(self, request: Mapping[str, object], fds: list[int]) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                self.selector.close()
                self.listener.close()
                for fd in self.wake:
                    os.close(fd)
                for conn in self.children.values():
                    if conn is not None:
                        conn.close()
                code = _run_child(self.entry, request, fds)
            finally:
                os._exit(code & 0xFF)
        return pid

    def _from_client(self, conn: socket.socket, pid: int) -> None:
        try:
            data = conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            # The client is gone (killed, or gave up): nobody waits for this command any more.
            self._forget(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            self.children[pid] = None
            return
        for line in data.decode().splitlines():
            if line.startswith("signal "):
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(pid, int(line.split()[1]))

    def _forget(self, pid: int) -> None:
        conn = self.children.get(pid)
        if conn is not None:
            self.selector.unregister(conn)
            conn.close()

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.setblocking(True)
                    conn.sendall(f"exit {os.waitstatus_to_exitcode(status)}\n".encode())
                self.selector.unregister(conn)
                conn.close()


def serve(
    socket_path: str,
    preload: Sequence[str],
    prepare: Sequence[str],
    entry: str,
    watch: Sequence[str] = (),
    owner_pid: int | None = None,
) -> None:
    """Import, prepare, print ``ready`` on stdout, then serve until stopped (SIGTERM/SIGINT,
    stale code, or the owner's exit)."""
    for module in preload:
        importlib.import_module(module)
    entry_function = _resolve(entry)
    for hook in prepare:
        _resolve(hook)()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    listener.bind(socket_path)
    listener.listen(64)
    server = _Server(listener, entry_function, list(watch), owner_pid)
    server.mtimes = _source_mtimes(server.watch)
    print("ready", flush=True)
    # The owner reads "ready" from a pipe it then stops reading: later output goes to stderr.
    os.dup2(2, 1)
    try:
        server.serve()
    finally:
        with contextlib.suppress(OSError):
            os.unlink(socket_path)
        # The private folder ForkServer.start made: a server that retires or goes stale exits
        # on its own, without the owner's stop() that would remove it.
        folder = os.path.dirname(socket_path)
        if os.path.basename(folder).startswith(_FOLDER_PREFIX):
            with contextlib.suppress(OSError):
                os.rmdir(folder)


def run_module_main(argv: Sequence[str]) -> object:
    """Entry for servers whose commands are ``python -m <module> args``: argv[0] is the module
    (as ``call_or_exec`` sends it).
    The module's ``main(args)`` is called (it must have been preloaded to gain anything)."""
    module, *args = argv
    return _resolve(f"{module}:main")(args)


# ---------------------------------------------------------------------------------------------
# Owner side: start a server as a child process and stop it
# ---------------------------------------------------------------------------------------------


@dataclass
class ForkServer:
    """A running fork server owned by this process."""

    socket_path: str
    process: subprocess.Popen[bytes]

    @classmethod
    def start(
        cls,
        *,
        preload: Sequence[str],
        entry: str,
        prepare: Sequence[str] = (),
        watch: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        python: str = sys.executable,
        timeout: float = 120.0,
    ) -> ForkServer:
        """Start a server and wait until it has imported everything and listens."""
        # Unix socket paths are limited to ~107 bytes: a short private folder of its own.
        folder = tempfile.mkdtemp(prefix=_FOLDER_PREFIX)
        socket_path = os.path.join(folder, "s")
        command = [python, str(SCRIPT), "serve", "--socket", socket_path, "--entry", entry]
        command += [a for m in preload for a in ("--preload", m)]
        command += [a for h in prepare for a in ("--prepare", h)]
        command += [a for w in watch for a in ("--watch", w)]
        command += ["--owner-pid", str(os.getpid())]
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env, cwd=cwd
        )
        assert process.stdout is not None
        deadline = time.monotonic() + timeout
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        ready = b""
        while b"\n" not in ready and time.monotonic() < deadline:
            if selector.select(timeout=max(deadline - time.monotonic(), 0)):
                chunk = os.read(process.stdout.fileno(), 64)
                if not chunk:
                    break
                ready += chunk
        selector.close()
        process.stdout.close()
        if ready.strip() != b"ready":
            process.kill()
            process.wait()
            raise ForkServerUnavailableError(
                f"fork server for {entry} did not start (exit {process.returncode}; "
                "its error is on stderr)"
            )
        return cls(socket_path, process)

    def alive(self) -> bool:
        """Whether it still runs (once it has exited, this also collects its exit status)."""
        return self.process.poll() is None

    def retire(self) -> None:
        """Let it finish its running commands and exit, taking no new ones (a caller that
        tries gets ``ForkServerUnavailableError``). ``alive()`` tells when it has exited."""
        if self.alive():
            self.process.send_signal(RETIRE_SIGNAL)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop it: running commands get SIGTERM and are awaited up to ``timeout``."""
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(self.socket_path))


def _main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="forkserver", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="import, then fork a child per command")
    serve_parser.add_argument("--socket", required=True)
    serve_parser.add_argument("--preload", action="append", default=[])
    serve_parser.add_argument("--prepare", action="append", default=[])
    serve_parser.add_argument("--entry", required=True, help="module:function(argv) -> code")
    serve_parser.add_argument(
        "--watch", action="append", default=[], help="a glob (** recurses) of files to watch"
    )
    serve_parser.add_argument("--owner-pid", type=int)
    commands.add_parser(
        "call-or-exec",
        usage="forkserver call-or-exec SOCKET_ENV MODULE [ARGS...]",
        help="run `python -m MODULE ARGS` through the server named by $SOCKET_ENV, or exec it",
    )
    if argv[:1] == ["call-or-exec"] and len(argv) >= 3:
        # By hand: the command's own arguments (dbt's --options) must not meet argparse.
        return call_or_exec(argv[1], argv[2], argv[3:])
    options = parser.parse_args(argv)
    if options.command != "serve":
        parser.error("call-or-exec needs SOCKET_ENV and MODULE")
    serve(
        options.socket, options.preload, options.prepare, options.entry, options.watch,
        options.owner_pid,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    # Run as a script, this file's folder heads sys.path; its sibling modules (``cdc``,
    # ``lake``, ...) must not shadow real top-level packages in what the server imports.
    if sys.path and Path(sys.path[0]).resolve() == SCRIPT.parent:
        del sys.path[0]
    raise SystemExit(_main(sys.argv[1:]))
