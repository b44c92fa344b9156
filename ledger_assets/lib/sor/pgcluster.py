"""A private PostgreSQL cluster that the project starts, reuses and stops by itself.

When no DSN is configured the demo and the tests run against a cluster of their own, created
with ``initdb`` under the project's state folder with ``wal_level=logical`` (the CDC slot needs
it). Postgres refuses to run as root, so when this process is root the server binaries run as
an unprivileged account (``nobody`` by default) that owns the data directory.

Failure modes are turned into one-line :class:`ClusterError` messages that say what to do:
missing binaries, a port already taken, a data directory that is not a cluster (for example a
half-finished ``initdb``), a stale ``postmaster.pid`` left by a crash, a state folder the
unprivileged account cannot reach.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

SUPERUSER = "ledger"
DEFAULT_DATABASE = "ledger"
#: The account that runs the server when we are root (Postgres refuses uid 0).
DEFAULT_RUN_AS = "nobody"

# Server settings the project relies on. wal_level/slots/senders are for CDC; the rest are
# sized for a 2-core, 24 GiB machine doing bulk COPY loads (fewer checkpoints during a seed).
SERVER_SETTINGS: dict[str, str] = {
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "listen_addresses": "'127.0.0.1'",
    "shared_buffers": "'1GB'",
    "max_wal_size": "'16GB'",
    "checkpoint_timeout": "'15min'",
    "maintenance_work_mem": "'1GB'",
    # A new cluster has no WAL segments to recycle; zero-filling each new 16 MB segment doubles
    # the WAL writes of a bulk seed. Crash safety does not depend on it (WAL records carry
    # their own checksums and the end of WAL is found by them).
    "wal_init_zero": "off",
    # A seed's nine COPY backends write ~100 MB/s of WAL: the default 16 MB of WAL buffers
    # wrapped several times a second and the backends wrote WAL themselves, queueing on
    # WALWriteLock (a fifth of the COPY backends' samples in pg_stat_activity); and each page
    # leaving a COPY's 16 MB ring must have its WAL flushed first. Bigger buffers and a walwriter
    # that wakes every 10 ms (it hibernates when idle) keep the WAL written ahead of both.
    # Durability is unchanged: commits still flush their WAL.
    "wal_buffers": "'256MB'",
    "wal_writer_delay": "'10ms'",
    "max_connections": "200",
    "log_min_messages": "warning",
    "timezone": "'UTC'",
}


class ClusterError(RuntimeError):
    """A problem with the private cluster, phrased as what to do about it."""


@dataclass(frozen=True)
class PostgresBinaries:
    """Where ``initdb``, ``pg_ctl`` and ``postgres`` live."""

    bindir: Path

    @property
    def initdb(self) -> str:
        return str(self.bindir / "initdb")

    @property
    def pg_ctl(self) -> str:
        return str(self.bindir / "pg_ctl")

    @classmethod
    def locate(cls, explicit: str | None = None) -> PostgresBinaries:
        """Find the server binaries: an explicit folder, Debian's layout, then ``PATH``.

        Args:
            explicit: a folder holding ``initdb`` and ``pg_ctl`` (``LEDGER_PG_BIN``).

        Raises:
            ClusterError: when no server binaries are installed.
        """
        candidates: list[Path] = []
        if explicit:
            candidates.append(Path(explicit))
        debian = sorted(
            Path("/usr/lib/postgresql").glob("*/bin"),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
            reverse=True,
        )
        candidates.extend(debian)
        on_path = shutil.which("initdb")
        if on_path:
            candidates.append(Path(on_path).resolve().parent)
        for folder in candidates:
            if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
                return cls(folder)
        raise ClusterError(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install them "
            "(Debian: apt-get install postgresql) or set LEDGER_PG_BIN to their folder, "
            "or set LEDGER_PG_DSN to use an existing server"
        )


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def find_free_port() -> int:
    """A port the kernel says is free right now (for throwaway test clusters)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateCluster:
    """A Postgres cluster in ``root`` (data, socket, log and password live there).

    Args:
        root: the cluster's folder, e.g. ``.state/postgres``; created on first start.
        port: TCP port on 127.0.0.1.
        binaries: server binaries; located automatically when omitted.
        run_as: the account that runs the server when this process is root.
        extra_settings: postgresql.conf values that override ``SERVER_SETTINGS`` at initdb.
    """

    def __init__(
        self,
        root: Path,
        port: int,
        binaries: PostgresBinaries | None = None,
        run_as: str = DEFAULT_RUN_AS,
        extra_settings: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root.resolve()
        self.port = port
        self.binaries = binaries or PostgresBinaries.locate()
        self.run_as = run_as
        self.extra_settings = dict(extra_settings or {})

    # ------------------------------------------------------------------ layout

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @property
    def password_file(self) -> Path:
        return self.root / "superuser.password"

    def dsn(self, database: str = DEFAULT_DATABASE) -> str:
        """The libpq URI of the superuser on ``database``."""
        password = quote(self.password_file.read_text().strip(), safe="")
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{quote(database)}"

    # ----------------------------------------------------------------- lifecycle

    def is_initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def ensure_initialized(self) -> bool:
        """Run ``initdb`` once; True if a new cluster was created.

        ``initdb`` writes into a temporary sibling folder that is renamed into place only when
        it has succeeded, so a crash during initialization never leaves a half-made cluster
        where the next start would find it.
        """
        if self.is_initialized():
            return False
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise ClusterError(
                f"{self.data_dir} exists but is not a PostgreSQL data directory "
                "(an interrupted setup?): remove it and start again"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        self._check_reachable_by_server_account()
        staging = self.root / "data.initdb-tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        if not self.password_file.exists():
            self.password_file.write_text(secrets.token_urlsafe(24) + "\n")
            self.password_file.chmod(0o600)
        pwfile = self.root / "initdb.pw"
        pwfile.write_text(self.password_file.read_text())
        self._hand_over([self.root, staging, self.socket_dir, pwfile])
        try:
            self._run(
                [
                    self.binaries.initdb,
                    "-D",
                    str(staging),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-instructions",
                ],
                what="initdb",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        conf = staging / "postgresql.auto.conf"
        settings = {
            **SERVER_SETTINGS,
            **self.extra_settings,
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
        }
        with conf.open("a") as handle:
            handle.write("# Written by ledger_assets.lib.sor.pgcluster\n")
            for key, value in settings.items():
                handle.write(f"{key} = {value}\n")
        staging.rename(self.data_dir)
        return True

    def running_pid(self) -> int | None:
        """The postmaster's pid if this cluster's server is alive, else None."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            return None
        # A recycled pid belongs to some other program: the server is not running.
        return pid if b"postgres" in cmdline else None

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the server (creating the cluster first if needed); a no-op if it runs.

        A ``postmaster.pid`` left by a crash is removed when its pid is not a live server;
        Postgres then performs ordinary crash recovery from the WAL.
        """
        self.ensure_initialized()
        if self.running_pid() is not None:
            return
        stale = self.data_dir / "postmaster.pid"
        if stale.exists():
            stale.unlink()
        if not port_is_free(self.port):
            raise ClusterError(
                f"port {self.port} on 127.0.0.1 is already taken by another program: "
                "stop it or set LEDGER_PG_PORT to a free port"
            )
        self._hand_over([self.socket_dir])
        self._run(
            [
                self.binaries.pg_ctl,
                "start",
                "-D",
                str(self.data_dir),
                "-w",
                "-t",
                str(int(timeout_s)),
                "-l",
                str(self.log_file),
                "-o",
                f"-p {self.port}",
            ],
            what="pg_ctl start",
            log_hint=True,
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server if it runs (``mode``: smart, fast or immediate)."""
        if self.running_pid() is None:
            return
        self._run(
            [self.binaries.pg_ctl, "stop", "-D", str(self.data_dir), "-m", mode, "-w"],
            what="pg_ctl stop",
        )

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would (tests use this)."""
        pid = self.running_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    # ------------------------------------------------------------------ internals

    def _server_account(self) -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(self.run_as)
        except KeyError as exc:
            raise ClusterError(
                f"running as root, and the account {self.run_as!r} that should run Postgres "
                "does not exist: create it or set LEDGER_PG_RUN_AS"
            ) from exc

    def _check_reachable_by_server_account(self) -> None:
        account = self._server_account()
        if account is None:
            return
        for folder in [*reversed(self.root.parents), self.root]:
            mode = folder.stat().st_mode
            owner_ok = folder.stat().st_uid == account.pw_uid
            if not owner_ok and not mode & 0o001:
                raise ClusterError(
                    f"{folder} is not searchable by {self.run_as!r}, which runs Postgres when "
                    "you are root: set LEDGER_STATE_DIR to a folder under a world-searchable "
                    "path (e.g. /var/tmp/ledger-assets)"
                )

    def _hand_over(self, paths: list[Path]) -> None:
        account = self._server_account()
        if account is None:
            return
        for path in paths:
            os.chown(path, account.pw_uid, account.pw_gid)

    def _run(self, argv: list[str], what: str, log_hint: bool = False) -> None:
        env = {**os.environ, "LC_ALL": "C"}
        account = self._server_account()
        # subprocess's user/group switch happens in C after fork, which is safe in a
        # multi-threaded parent (dagster dev), unlike a Python preexec_fn.
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=env,
            cwd=self.root,
            check=False,
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            extra_groups=[] if account else None,
        )
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            last = detail[-1] if detail else f"exit code {result.returncode}"
            hint = f" (server log: {self.log_file})" if log_hint else ""
            raise ClusterError(f"{what} failed: {last}{hint}")


@contextlib.contextmanager
def throwaway_cluster(root: Path, port: int | None = None) -> Iterator[PrivateCluster]:
    """A started cluster that is stopped when the block ends (tests and benchmarks)."""
    cluster = PrivateCluster(root, port or find_free_port())
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop(mode="immediate")
