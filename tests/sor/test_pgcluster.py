"""The private cluster: first start, reuse, crash recovery and the bad-input messages."""

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ledger_assets.lib.sor.pgcluster import (
    ClusterError,
    PostgresBinaries,
    PrivateCluster,
    find_free_port,
)
from ledger_assets.lib.sor.preflight import PreflightError, check_server
from tests.conftest import world_searchable_tmpdir


@pytest.fixture
def cluster_root() -> Iterator[Path]:
    root = world_searchable_tmpdir("ledger-test-cluster-")
    yield root / "pg"
    # Stop anything a failing test left running before removing its files.
    cluster = PrivateCluster(root / "pg", 1)
    if cluster.is_initialized():
        cluster.stop(mode="immediate")
    shutil.rmtree(root, ignore_errors=True)


def test_start_creates_then_reuses_the_cluster(cluster_root: Path) -> None:
    cluster = PrivateCluster(cluster_root, find_free_port())
    cluster.start()
    cluster.start()  # already running: a no-op
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        conn.execute("create table kept (v int)")
        conn.execute("insert into kept values (42)")
        assert conn.execute("show wal_level").fetchone() == ("logical",)
    cluster.stop()
    assert cluster.running_pid() is None
    assert cluster.ensure_initialized() is False  # the data directory is reused
    cluster.start()
    with psycopg.connect(cluster.dsn("postgres")) as conn:
        assert conn.execute("select v from kept").fetchone() == (42,)
    cluster.stop()


def test_crash_leaves_a_cluster_the_next_start_recovers(cluster_root: Path) -> None:
    cluster = PrivateCluster(cluster_root, find_free_port())
    cluster.start()
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        conn.execute("create table survived (v int)")
        conn.execute("insert into survived values (1)")
    cluster.kill()
    assert (cluster.data_dir / "postmaster.pid").exists()  # stale lock left by the crash
    cluster.start()
    with psycopg.connect(cluster.dsn("postgres")) as conn:
        assert conn.execute("select v from survived").fetchone() == (1,)
    assert "database system was interrupted" in cluster.log_file.read_text()
    cluster.stop()


def test_stale_pid_file_of_a_recycled_pid_is_ignored(cluster_root: Path) -> None:
    cluster = PrivateCluster(cluster_root, find_free_port())
    cluster.start()
    cluster.kill()
    # Point the lock at a live process that is not Postgres, as after pid reuse.
    pid_file = cluster.data_dir / "postmaster.pid"
    lines = pid_file.read_text().splitlines()
    pid_file.write_text("\n".join([str(os.getpid()), *lines[1:]]) + "\n")
    assert cluster.running_pid() is None
    cluster.start()
    assert cluster.running_pid() is not None
    cluster.stop()


def test_port_already_taken_is_one_clear_line(cluster_root: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        cluster = PrivateCluster(cluster_root, port)
        with pytest.raises(ClusterError, match=f"port {port} .* already taken.*LEDGER_PG_PORT"):
            cluster.start()


def test_leftover_non_cluster_data_directory_is_refused(cluster_root: Path) -> None:
    (cluster_root / "data").mkdir(parents=True)
    (cluster_root / "data" / "junk").write_text("half an initdb")
    with pytest.raises(ClusterError, match="not a PostgreSQL data directory.*remove it"):
        PrivateCluster(cluster_root, find_free_port()).start()


def test_interrupted_initdb_staging_is_cleaned_up(cluster_root: Path) -> None:
    staging = cluster_root / "data.initdb-tmp"
    staging.mkdir(parents=True)
    (staging / "PG_VERSION").write_text("15\n")
    cluster = PrivateCluster(cluster_root, find_free_port())
    cluster.start()
    assert not staging.exists()
    cluster.stop()


def test_missing_binaries_say_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(Path, "glob", lambda self, pattern: iter(()))
    with pytest.raises(ClusterError, match="apt-get install postgresql.*LEDGER_PG_BIN"):
        PostgresBinaries.locate(str(tmp_path))


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another account")
def test_state_dir_unreachable_by_server_account_is_explained(tmp_path: Path) -> None:
    # pytest's tmp_path is under a 0700 folder that `nobody` cannot traverse.
    with pytest.raises(ClusterError, match="not searchable by 'nobody'.*LEDGER_STATE_DIR"):
        PrivateCluster(tmp_path / "pg", find_free_port()).start()


def test_wrong_dsn_is_one_clear_line() -> None:
    port = find_free_port()
    with pytest.raises(PreflightError, match="cannot connect to Postgres.*LEDGER_PG_DSN") as err:
        check_server(f"postgresql://nobody:wrong@127.0.0.1:{port}/nothing")
    assert "\n" not in str(err.value)


def test_server_without_logical_replication_is_explained(cluster_root: Path) -> None:
    cluster = PrivateCluster(
        cluster_root, find_free_port(), extra_settings={"wal_level": "replica"}
    )
    cluster.start()
    try:
        with pytest.raises(PreflightError, match="wal_level is 'replica'; set wal_level = logical"):
            check_server(cluster.dsn("postgres"))
    finally:
        cluster.stop()
