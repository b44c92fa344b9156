"""``python -m ledger_assets.lib.marts.dbt_runner <dbt arguments>``: dbt's CLI, with a parse
that ignores the run's ``--vars``.

dbt keys its partial-parse state (``target/partial_parse.msgpack``) by the command's ``--vars``
and re-parses the whole project when they differ from the last parse's. Every marts run passes
a new window as vars, so every run paid a full parse: about as much CPU as the one-day build
itself. In this project the vars are not parse-time inputs: no config, ref, source or test
definition depends on them; models read them when they compile, at run time. So this entry point
parses without them, which reuses the saved state (normally with nothing to re-parse), and runs
the command on that manifest through dbt's programmatic API (``dbtRunner(manifest=...)``) in the
same process, so dbt is imported once. The command itself still gets its vars.

Output and exit codes are dbt's own: 0 success, 1 a node failed or errored, 2 dbt failed.

Callers start it through :func:`ledger_assets.lib.marts.project.dbt_runner_command`: a fork of
a warm dbt server (``lib.forkserver``, named by ``LEDGER_DBT_FORKSERVER``) when one runs, which
skips dbt's ~3 s import, else a new process, exactly as ``python -m`` this module.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from dbt.cli.main import dbtRunner, dbtRunnerResult

#: Options (with a value) that decide which project is parsed, and how; passed to the parse.
PARSE_OPTIONS = ("--project-dir", "--profiles-dir", "--profile", "--target", "--target-path")


def parse_arguments(args: Sequence[str]) -> list[str]:
    """The ``dbt parse`` arguments for the project that ``args`` (a dbt command) runs on."""
    # No manifest.json: the command gets the manifest in memory (and writes its own artifacts).
    parse = ["parse", "--no-write-json"]
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name in PARSE_OPTIONS:
            parse += [name, value] if eq else [name, args[i + 1]]
    return parse


def exit_code(result: dbtRunnerResult) -> int:
    if result.success:
        return 0
    if result.exception is None:
        return 1
    print(f"dbt failed: {result.exception!r}", file=sys.stderr)
    return 2


def main(args: Sequence[str]) -> int:
    """Parse the project without vars, then run ``args`` (a dbt command) on that manifest.
    The command line, and the warm dbt server's entry."""
    parsed = dbtRunner().invoke(parse_arguments(args))
    if not parsed.success:
        return exit_code(parsed)
    return exit_code(dbtRunner(manifest=parsed.result).invoke(list(args)))  # type: ignore[arg-type]


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
