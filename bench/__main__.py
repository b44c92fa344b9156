"""``python -m bench seed_load --rows 5000000``: run workloads, print figures vs. baselines."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import psycopg.conninfo

from bench.core import REGISTRY, Context, Figure, Options, render
from bench.workloads import __all__ as _registered  # noqa: F401  (imports register workloads)
from ledger_assets.lib.sor.pgcluster import throwaway_cluster


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("workloads", nargs="+", help=f"one or more of: {', '.join(REGISTRY)}, all")
    parser.add_argument("--rows", "--scale", type=int, default=2_000_000, help="total seed rows")
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--years", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--baseline-rows", type=int, default=20_000,
                        help="rows in the row-by-row baseline slice")  # fmt: skip
    parser.add_argument("--lake-copies", type=int, default=10,
                        help="marts_at_scale: copies of each row in its dense lake")  # fmt: skip
    parser.add_argument("--dsn", help="use this server (a superuser DSN) instead of a private one")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    names = list(REGISTRY) if args.workloads == ["all"] else args.workloads
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        print(f"unknown workload(s): {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
        return 2
    options = Options(
        args.rows, args.tenants, args.years, args.seed, args.baseline_rows, args.lake_copies
    )
    results: dict[str, list[Figure]] = {}

    def run(admin_dsn: str) -> None:
        def dsn_for(database: str) -> str:
            return psycopg.conninfo.make_conninfo(admin_dsn, dbname=database)

        ctx = Context(admin_dsn, options, dsn_for)
        for name in names:
            results[name] = REGISTRY[name](ctx)
            print(render({name: results[name]}), flush=True)

    if args.dsn:
        run(args.dsn)
    else:
        root = Path(tempfile.mkdtemp(prefix="ledger-bench-", dir=os.environ.get("TMPDIR", "/tmp")))
        root.chmod(0o755)  # the unprivileged server account must reach it when we are root
        try:
            with throwaway_cluster(root / "cluster") as cluster:
                run(cluster.dsn("postgres"))
        finally:
            # A benchmark cluster holds gigabytes; nothing in it is kept.
            shutil.rmtree(root, ignore_errors=True)
    print()
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
