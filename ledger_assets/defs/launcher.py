"""A run launcher that forks run workers from a warm process instead of starting them cold.

Dagster's ``DefaultRunLauncher`` asks the code server to start each run, and the code server
starts a fresh interpreter (``multiprocessing`` spawn) that imports the code location again:
~6 s on this project's two cores before the run does anything, and the marts' dbt adds ~3 s of
its own import. A late dispute goes through two runs (lake apply, then marts), so most of its
way to the dashboard was imports.

``ForkServerRunLauncher`` keeps a fork server (``lib.forkserver``) per code location that has
imported the code location and built its definitions, and starts each run as a fork of it that
runs ``dagster api execute_run``: the same entry point the container launchers (Docker, K8s,
ECS) use, so the run's events, logs, retries and failure handling are Dagster's own. With
``warm_dbt`` it also keeps a warm dbt server and points the run workers at it
(``LEDGER_DBT_FORKSERVER``), so the marts' dbt starts as a fork too.

Correctness does not depend on the servers:

* a server refuses to fork once any module it imported, or a file matching a ``watch`` glob
  (the dbt project's sources, which the code location parses when it loads), has changed;
  the launcher then starts a new server, so a run never executes code older than on disk;
* a server that cannot start (the code location fails to import, say) makes the launcher
  start the run cold, ``python -m dagster api execute_run``, where Dagster reports the error
  on the run;
* the servers are children of the process that launches runs (the daemon); they retire with
  it (or with the instance's disposal), exiting after their running workers finish, as a run
  outlives a restarting daemon. A replaced (stale) server retires the same way.

Termination: the worker's pid is a run tag; ``terminate`` marks the run canceling and sends
SIGINT to it, which Dagster turns into the run's interruption (the dbt client relays it on).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Self

import dagster as dg
from dagster._core.launcher import LaunchRunContext, RunLauncher
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass, ConfigurableClassData

from ledger_assets.lib.forkserver import ForkServer, ForkServerUnavailableError, spawn
from ledger_assets.lib.marts.project import DBT_FORKSERVER_ENV, start_dbt_server

#: Run tag: the pid of the run's worker process (on the launching host).
WORKER_PID_TAG = "ledger/run_worker_pid"
#: Run tag: how the worker started, ``fork`` (from the warm server) or ``cold``.
WORKER_START_TAG = "ledger/run_worker_start"
#: The repository origin a run-worker server loads (serialized), for ``load_code_location``.
ORIGIN_ENV = "LEDGER_RUN_WORKER_ORIGIN"


def load_code_location() -> None:
    """Fork-server ``prepare`` hook: import the code location and build its definitions, so
    every forked worker finds them in memory (Dagster caches the repository definition)."""
    origin = dg.deserialize_value(os.environ[ORIGIN_ENV], RepositoryPythonOrigin)
    from dagster._utils.hosted_user_process import recon_repository_from_origin

    recon_repository_from_origin(origin).get_definition()


def execute_run_main(argv: Sequence[str]) -> object:
    """Fork-server entry: ``argv`` is a ``dagster api execute_run ...`` command line."""
    from dagster._cli import cli

    return cli.main(args=list(argv[1:]), prog_name="dagster", auto_envvar_prefix="DAGSTER")


class ForkServerRunLauncher(RunLauncher, ConfigurableClass):
    """Launch each run as a fork of a process that has loaded its code location."""

    def __init__(
        self,
        inst_data: ConfigurableClassData | None = None,
        watch: Sequence[str] = (),
        warm_dbt: bool = True,
    ) -> None:
        self._inst_data = inst_data
        self._watch = list(watch)
        self._warm_dbt = warm_dbt
        #: Warm servers by serialized repository origin (origins hold lists: not hashable).
        self._servers: dict[str, ForkServer] = {}
        self._dbt_server: ForkServer | None = None
        self._cold_workers: list[subprocess.Popen[bytes]] = []
        #: Replaced servers still finishing their runs (polled, so none is left a zombie).
        self._retiring: list[ForkServer] = []
        self._lock = threading.Lock()
        super().__init__()  # type: ignore[no-untyped-call]  # RunLauncher.__init__ is untyped

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {
            "watch": dg.Field(
                [str], is_required=False, default_value=[],
                description="Globs (relative to the code location's working directory; ** "
                "recurses) of files whose change makes the warm server stale, besides the "
                "modules it imported. Leave out what runs write (dbt's target/ and logs/).",
            ),
            "warm_dbt": dg.Field(
                bool, is_required=False, default_value=True,
                description="Also keep a warm dbt server for the run workers' dbt commands.",
            ),
        }  # fmt: skip

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> Self:
        return cls(inst_data=inst_data, **config_value)

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        origin = run.job_code_origin
        assert isinstance(origin, JobPythonOrigin), f"run {run.run_id} has no Python origin"
        full_command = ExecuteRunArgs(
            job_origin=origin, run_id=run.run_id, instance_ref=self._instance.get_ref()
        ).get_command_args()
        # `<entry point> api execute_run <args>`; the entry point is `dagster` by default.
        command = ["dagster", *full_command[list(full_command).index("api") :]]
        started = time.monotonic()
        how, pid = "fork", self._fork(origin.repository_origin, command)
        if pid is None:
            how, pid = "cold", self._start_cold(origin.repository_origin, command)
        self._instance.add_run_tags(run.run_id, {WORKER_PID_TAG: str(pid), WORKER_START_TAG: how})
        self._instance.report_engine_event(
            f"Run worker started ({how}, pid {pid}) in {time.monotonic() - started:.2f} s.",
            run,
            cls=self.__class__,
        )

    def _fork(self, origin: RepositoryPythonOrigin, command: Sequence[str]) -> int | None:
        """Fork the worker from the origin's warm server (started or renewed as needed)."""
        working_directory = _working_directory(origin)
        for _attempt in range(2):  # a stale server is replaced once
            server = self._server(origin)
            if server is None:
                return None
            try:
                with open(os.devnull) as null:
                    return spawn(
                        server.socket_path, command, self._worker_env(), working_directory,
                        stdio=(null.fileno(), sys.stdout.fileno(), sys.stderr.fileno()),
                    )  # fmt: skip
            except ForkServerUnavailableError:
                # Stale (or gone): a new server takes the next commands, while this one
                # finishes the runs it has started; a signal now would stop them.
                with self._lock:
                    self._servers.pop(dg.serialize_value(origin), None)
                    self._retiring.append(server)
        return None

    def _server(self, origin: RepositoryPythonOrigin) -> ForkServer | None:
        with self._lock:
            self._retiring = [s for s in self._retiring if s.alive()]
            server = self._servers.get(dg.serialize_value(origin))
            if server is not None and server.alive():
                return server
            working_directory = _working_directory(origin)
            try:
                server = ForkServer.start(
                    preload=[__name__],
                    prepare=[f"{__name__}:load_code_location"],
                    entry=f"{__name__}:execute_run_main",
                    watch=[os.path.join(working_directory, w) for w in self._watch],
                    env={**self._worker_env(), ORIGIN_ENV: dg.serialize_value(origin)},
                    cwd=working_directory,
                    python=origin.executable_path,
                )
            except ForkServerUnavailableError:
                return None  # the cold start reports why, on the run
            self._servers[dg.serialize_value(origin)] = server
            return server

    def _worker_env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self._warm_dbt:
            if self._dbt_server is None or not self._dbt_server.alive():
                # Renewed when it exited (stale after an upgrade): a dbt command that finds
                # no server starts cold, so this is only ever a speed-up.
                try:
                    self._dbt_server = start_dbt_server()
                except ForkServerUnavailableError:
                    self._dbt_server = None
            if self._dbt_server is not None:
                env[DBT_FORKSERVER_ENV] = self._dbt_server.socket_path
        return env

    def _start_cold(self, origin: RepositoryPythonOrigin, command: Sequence[str]) -> int:
        # Finished cold workers are reaped here, so none is left a zombie for long.
        self._cold_workers = [p for p in self._cold_workers if p.poll() is None]
        process = subprocess.Popen(
            [origin.executable_path, "-m", "dagster", *command[1:]],
            env=self._worker_env(), cwd=_working_directory(origin), stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self._cold_workers.append(process)
        return process.pid

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        pid = run.tags.get(WORKER_PID_TAG)
        if pid is None:
            self._instance.report_engine_event(
                "No run worker pid recorded: nothing to interrupt.", run, cls=self.__class__
            )
            return False
        try:
            os.kill(int(pid), signal.SIGINT)
        except ProcessLookupError:
            return False
        return True

    def dispose(self) -> None:
        # Retired, not stopped: the runs they started finish, as with a restarting daemon.
        with self._lock:
            servers = [*self._servers.values(), *([self._dbt_server] if self._dbt_server else [])]
            self._servers.clear()
            self._dbt_server = None
        for server in servers:
            server.retire()


def _working_directory(origin: RepositoryPythonOrigin) -> str:
    working_directory = getattr(origin.code_pointer, "working_directory", None)
    return str(working_directory or os.getcwd())
