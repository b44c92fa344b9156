"""Which dbt views a windowed marts run may keep as they are.

A one-day ``dbt build`` spends about half its nodes re-creating the staging and intermediate
views, each with its data tests, although a view's SQL changes only with the project: the views
select from the ``lake`` views, which ``prepare`` re-points at the window's files before every
run. A windowed run therefore skips the views that do not read the run's window
(:func:`window_independent_views`), provided the marts database holds views built from the
current project (:func:`project_fingerprint`, recorded by :func:`record_views_built` after a
build that re-created every view). A view that reads the window (the day spine) is rebuilt by
every run, and a full build rebuilds them all.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import duckdb

from ledger_assets.lib import forkserver

#: The schema dbt builds the marts in (dbt_project.yml, macros/generate_schema_name.sql).
MARTS_SCHEMA = "marts"
#: The files a dbt parse reads; a change to any of them may change the views.
PROJECT_GLOBS = ("*.yml", "models/**/*", "macros/**/*", "tests/**/*")
#: Where the marts database records the project its views were built from.
_RECORD_SCHEMA, _RECORD_TABLE = "main", "dbt_views_built"
VIEWS_BUILT_TABLE = f"{_RECORD_SCHEMA}.{_RECORD_TABLE}"
#: The macros that read the run's window (dbt vars start_date/end_date).
WINDOW_MACROS_FILE = "macros/date_window.sql"
_VAR_CALL = re.compile(r"(?<![\w.])var\s*\(")


def project_files(project_dir: Path) -> list[Path]:
    """The dbt project's source files, in a stable order."""
    return sorted(
        {path for pattern in PROJECT_GLOBS for path in project_dir.glob(pattern) if path.is_file()}
    )


def project_fingerprint(project_dir: Path) -> str:
    """A hash of the project's files and of the dbt versions that turn them into SQL."""
    digest = hashlib.sha256()
    for package in ("dbt-core", "dbt-duckdb"):
        digest.update(f"{package}=={version(package)}\0".encode())
    for path in project_files(project_dir):
        digest.update(path.relative_to(project_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def window_independent_views(manifest: Mapping[str, Any]) -> list[str]:
    """The names of the view models whose SQL does not depend on the run's window.

    A view depends on it when its SQL calls ``var()`` or uses, directly or through other
    macros, a macro of :data:`WINDOW_MACROS_FILE` (or any macro calling ``var()``).
    """
    macros: Mapping[str, Any] = manifest["macros"]
    reads_window: dict[str, bool] = {}

    def macro_reads_window(unique_id: str) -> bool:
        if unique_id not in reads_window:
            reads_window[unique_id] = False  # a cycle does not read the window by itself
            macro = macros.get(unique_id)
            reads_window[unique_id] = macro is not None and (
                macro["original_file_path"] == WINDOW_MACROS_FILE
                or bool(_VAR_CALL.search(macro["macro_sql"]))
                or any_reads_window(macro["depends_on"]["macros"])
            )
        return reads_window[unique_id]

    def any_reads_window(unique_ids: Iterable[str]) -> bool:
        return any(macro_reads_window(m) for m in unique_ids)

    return sorted(
        node["name"]
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model"
        and node["config"]["materialized"] == "view"
        and not _VAR_CALL.search(node["raw_code"])
        and not any_reads_window(node["depends_on"]["macros"])
    )


def views_built_from(database: Path) -> str | None:
    """The fingerprint of the project the database's views were built from (None: unknown)."""
    if not database.exists():
        return None
    con = duckdb.connect(str(database), read_only=True)
    try:
        found = con.execute(
            "select count(*) from information_schema.tables "
            "where table_schema = ? and table_name = ?",
            [_RECORD_SCHEMA, _RECORD_TABLE],
        ).fetchone()
        if not found or not found[0]:
            return None
        row = con.execute(f"select fingerprint from {VIEWS_BUILT_TABLE}").fetchone()  # noqa: S608
    finally:
        con.close()
    return None if row is None else str(row[0])


def record_views_built(database: Path, fingerprint: str | None) -> None:
    """Record that every view was built from the project ``fingerprint`` (None: forget it,
    before a build that re-creates views, so a build that fails half-way is not trusted)."""
    con = duckdb.connect(str(database))
    try:
        con.execute(f"create or replace table {VIEWS_BUILT_TABLE} (fingerprint varchar)")
        if fingerprint is not None:
            con.execute(f"insert into {VIEWS_BUILT_TABLE} values (?)", [fingerprint])  # noqa: S608
    finally:
        con.close()


#: The environment variable that names a warm dbt server's socket (see ``start_dbt_server``).
DBT_FORKSERVER_ENV = "LEDGER_DBT_FORKSERVER"
_DBT_RUNNER_MODULE = "ledger_assets.lib.marts.dbt_runner"


def dbt_runner_command() -> list[str]:
    """The command that runs :mod:`ledger_assets.lib.marts.dbt_runner` (append dbt's
    arguments): in a fork of the warm dbt server named by ``$LEDGER_DBT_FORKSERVER`` when there
    is one, else as ``python -m`` the module. Either way it is a process with this one's
    pipes, environment and exit code, as dagster-dbt expects of its ``dbt`` executable."""
    return [
        sys.executable, str(forkserver.SCRIPT), "call-or-exec", DBT_FORKSERVER_ENV,
        _DBT_RUNNER_MODULE,
    ]  # fmt: skip


def start_dbt_server(env: Mapping[str, str] | None = None) -> forkserver.ForkServer:
    """A fork server that has imported dbt: set ``LEDGER_DBT_FORKSERVER`` to its
    ``socket_path`` for the processes that should use it. Its owner stops it."""
    return forkserver.ForkServer.start(
        preload=[_DBT_RUNNER_MODULE],
        entry="ledger_assets.lib.forkserver:run_module_main",
        env=env,
    )


def run_dbt_process(
    args: Sequence[str],
    project_dir: Path,
    state_dir: Path,
    *,
    runner: bool = True,
    target_path: Path | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run dbt on ``project_dir`` in a process of its own, with ``LEDGER_STATE_DIR=state_dir``
    (the profile opens ``<state_dir>/marts.duckdb``); output is captured, the exit code kept.

    ``runner`` runs the marts asset's entry point (:mod:`ledger_assets.lib.marts.dbt_runner`:
    the project parsed without the vars), otherwise dbt's own CLI. ``target_path`` gives the
    run its own artifacts, partial-parse state and logs.
    """
    if runner:
        command = [*dbt_runner_command(), *args]
    else:
        command = [str(Path(sys.executable).with_name("dbt")), *args]
    env = {**os.environ, "LEDGER_STATE_DIR": str(state_dir),
           "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}  # fmt: skip
    if target_path is not None:
        command += ["--target-path", str(target_path)]
        env["DBT_LOG_PATH"] = str(target_path / "logs")
    return subprocess.run(
        [*command, "--project-dir", str(project_dir), "--profiles-dir", str(project_dir)],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
