"""The harness: a registry of workloads, a context that hands out fresh databases, one table.

A workload is a function ``(ctx) -> list[Figure]`` registered with :func:`workload`. It runs
its own baseline in the same process and reports each figure with that baseline, so the
printed ratio compares like with like on the same machine and server.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psycopg
import yaml
from psycopg import sql

from ledger_assets.lib.sor.migrate import migrate


@dataclass(frozen=True)
class Figure:
    """One measured number, optionally with the baseline it is compared to.

    Attributes:
        name: what was measured, e.g. ``"rows/s overall"``.
        value: the measurement.
        unit: its unit, e.g. ``"rows/s"`` or ``"s"``.
        baseline: the same figure for the baseline run, if any.
        higher_is_better: direction for the ratio column ("x faster").
    """

    name: str
    value: float
    unit: str
    baseline: float | None = None
    higher_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        """How many times better than the baseline (>1 means better)."""
        if self.baseline is None or self.baseline == 0 or self.value == 0:
            return None
        return self.value / self.baseline if self.higher_is_better else self.baseline / self.value


@dataclass(frozen=True)
class Options:
    """Command-line knobs every workload may read."""

    rows: int
    tenants: int
    years: float
    seed: int
    baseline_rows: int
    #: ``marts_at_scale``: how many copies of each seeded row its denser lake holds.
    lake_copies: int = 10


class Context:
    """What a workload gets: options and fresh, migrated databases on one server."""

    def __init__(self, admin_dsn: str, options: Options, dsn_for: Callable[[str], str]) -> None:
        self.admin_dsn = admin_dsn
        self.options = options
        self._dsn_for = dsn_for

    @contextmanager
    def fresh_database(self, label: str) -> Iterator[str]:
        """A new database with all migrations applied, dropped afterwards."""
        name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        dsn = self._dsn_for(name)
        try:
            migrate(dsn)
            yield dsn
        finally:
            with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
                )


@dataclass
class CpuSpent:
    """CPU seconds spent by the Postgres server and by this process during a ``with`` block."""

    server: float | None = None
    client: float = 0.0


def _proc_stat(pid: int | str) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (index 1 is the parent pid)."""
    with open(f"/proc/{pid}/stat") as handle:
        text = handle.read()
    return text[text.rindex(")") + 2 :].split()


def _server_cpu(postmaster: int) -> float | None:
    """CPU seconds of a local server: its postmaster, every live child, and every child it has
    reaped (a parent's cutime/cstime): backends that exited are counted too."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        fields = _proc_stat(postmaster)
    except OSError:
        return None
    total = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            child = _proc_stat(pid)
        except OSError:
            continue  # exited meanwhile: the postmaster's cutime has it (or will)
        if int(child[1]) == postmaster:
            total += int(child[11]) + int(child[12])
    return total / tick


@contextmanager
def cpu_spent(dsn: str) -> Iterator[CpuSpent]:
    """Measure the CPU the block costs the server (when it runs on this machine and /proc
    shows it; else ``server`` stays None) and this process."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("select pg_backend_pid()").fetchone()
    assert row is not None
    try:
        postmaster: int | None = int(_proc_stat(int(str(row[0])))[1])
    except OSError:
        postmaster = None
    before = _server_cpu(postmaster) if postmaster else None
    client = time.process_time()
    spent = CpuSpent()
    yield spent
    spent.client = time.process_time() - client
    after = _server_cpu(postmaster) if postmaster else None
    if before is not None and after is not None:
        spent.server = after - before


#: The project's instance configuration (``dagster.yaml``).
INSTANCE_CONFIG = Path(__file__).resolve().parents[1] / "dagster.yaml"
_STORAGE_KEYS = ("storage", "run_storage", "event_log_storage", "schedule_storage")


def project_storage_config(base: Path) -> str:
    """``dagster.yaml``'s storage sections with their folders moved below ``base``: a bench
    instance records runs with the storage classes the project's instance uses."""
    config = yaml.safe_load(INSTANCE_CONFIG.read_text())
    prefix = ".state/dagster/storage"
    sections = {}
    for key in _STORAGE_KEYS:
        if key not in config:
            continue
        text = yaml.safe_dump(config[key])
        assert prefix in text, f"dagster.yaml's {key} is not under {prefix}"
        sections[key] = yaml.safe_load(text.replace(prefix, str(base)))
    return yaml.safe_dump(sections)


def local_instance(home: Path, config: str | None = None) -> dg.DagsterInstance:
    """A Dagster instance in ``home`` (created), with ``config`` as its ``dagster.yaml``;
    default: the project's storage (:func:`project_storage_config`) below ``home/storage``."""
    home.mkdir(parents=True, exist_ok=True)
    if config is None:
        config = project_storage_config(home / "storage")
    (home / "dagster.yaml").write_text(config)
    return dg.DagsterInstance.from_config(str(home))


Workload = Callable[[Context], list[Figure]]
REGISTRY: dict[str, Workload] = {}


def workload(name: str) -> Callable[[Workload], Workload]:
    """Register a workload under ``name`` (``python -m bench <name>``)."""

    def register(func: Workload) -> Workload:
        REGISTRY[name] = func
        return func

    return register


def render(results: dict[str, list[Figure]]) -> str:
    """The results as one fixed-width table."""
    header = (
        f"{'workload':<12} {'figure':<44} {'value':>14} {'unit':<7} {'baseline':>14} {'ratio':>8}"
    )
    lines = [header, "-" * len(header)]
    for name, figures in results.items():
        for fig in figures:
            base = "" if fig.baseline is None else f"{fig.baseline:,.1f}"
            ratio = "" if fig.ratio is None else f"{fig.ratio:,.1f}x"
            lines.append(
                f"{name:<12} {fig.name:<44} {fig.value:>14,.1f} {fig.unit:<7} {base:>14} {ratio:>8}"
            )
    return "\n".join(lines)
