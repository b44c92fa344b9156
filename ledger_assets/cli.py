"""The ``ledger`` command: run the system of record and the demo.

    ledger db start|stop|status|dsn   the private Postgres cluster
    ledger migrate                    apply pending schema migrations
    ledger seed [--tenants ...]       fill the system of record with synthetic data
    ledger demo                       all of the above, then ``dagster dev``

Errors that a user can fix print one line and exit with status 2. The command never imports
Dagster: ``demo`` starts ``dagster dev`` as a child process with the resolved DSN in its
environment, which the code location reads through ``EnvVar("LEDGER_PG_DSN")``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from contextlib import ExitStack
from datetime import date
from pathlib import Path

from ledger_assets.lib.logs import configure_logging, get_logger
from ledger_assets.lib.settings import Settings
from ledger_assets.lib.signals import handle_sigint_if_ignored
from ledger_assets.lib.sor import bootstrap
from ledger_assets.lib.sor.migrate import MigrationError
from ledger_assets.lib.sor.pgcluster import ClusterError
from ledger_assets.lib.sor.preflight import PreflightError

log = get_logger(__name__)

#: Errors a user can act on: printed as one line, never as a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (
    ClusterError,
    PreflightError,
    MigrationError,
    ValueError,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _db(args: argparse.Namespace, settings: Settings) -> int:
    if settings.pg_dsn and args.action in {"start", "stop"}:
        raise ValueError("LEDGER_PG_DSN is set: the private cluster is not in use")
    cluster = bootstrap.private_cluster(settings)
    if args.action == "start":
        cluster.start()
        bootstrap.ensure_database(cluster.dsn("postgres"), "ledger")
        print(f"private Postgres running on 127.0.0.1:{cluster.port} ({cluster.data_dir})")
    elif args.action == "stop":
        cluster.stop()
        print("private Postgres stopped")
    elif args.action == "status":
        pid = cluster.running_pid()
        print(f"running (pid {pid})" if pid else "stopped")
        return 0 if pid else 3
    elif args.action == "dsn":
        print(settings.pg_dsn or cluster.dsn())
    return 0


def _migrate(_: argparse.Namespace, settings: Settings) -> int:
    sor = bootstrap.prepare(settings)
    names = [f"{m.version:04d}_{m.name}" for m in sor.applied]
    print(f"applied {len(names)} migration(s): {', '.join(names)}" if names else "up to date")
    return 0


def _seed(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: the generator pulls in numpy/pyarrow, which db/migrate do not need.
    from ledger_assets.lib.synth.load import SeedSpec, seed_database

    sor = bootstrap.prepare(settings)
    if args.rows:
        spec = SeedSpec.scale(total_rows=args.rows, tenants=args.tenants, years=args.years)
    else:
        spec = SeedSpec.demo()
    if args.seed is not None:
        spec = spec.with_seed(args.seed)
    report = seed_database(sor.dsn, spec)
    print(report.summary())
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg

    from ledger_assets.dashboard.server import (
        config_for,
        dashboard_port,
        dashboard_secret,
        dashboard_server,
        login_urls,
    )
    from ledger_assets.lib import demo
    from ledger_assets.lib.lake.storage import LakePath
    from ledger_assets.lib.synth.spec import SeedSpec

    providers, use_standins = demo.provider_settings_from_env(args.stripe_port, args.plaid_port)
    # A local folder or an s3:// URI (never through Path, which would fold "s3://" to "s3:/").
    lake_root = str(os.environ.get("LEDGER_LAKE_ROOT") or settings.lake_root)
    if use_standins and not settings.pg_dsn and not args.keep_data:
        # The stand-ins rebuild their history at each start and forget earlier live activity,
        # so the data derived from them (tables, cursors, lake, Dagster's run keys) starts
        # fresh too. The cluster itself is reused.
        log.info("fresh demo data: recreating the demo database, lake and Dagster storage")
        bootstrap.recreate_private_database(settings)
        LakePath.at(lake_root).delete_tree()
        shutil.rmtree(settings.state_dir / "lake-local", ignore_errors=True)
        shutil.rmtree(PROJECT_ROOT / ".state" / "dagster", ignore_errors=True)
    sor = bootstrap.prepare(settings)
    with ExitStack() as stack:
        if sor.cluster is not None and not args.keep_db_running:
            stack.callback(sor.cluster.stop)
        receiver = stack.enter_context(
            demo.webhook_receiver(sor.dsn, providers, "127.0.0.1", args.webhook_port)
        )
        alerts_url = os.environ.get("LEDGER_ALERT_WEBHOOK_URL") or stack.enter_context(
            demo.alert_page("127.0.0.1", args.alert_port)
        )
        print(f"reconciliation alerts: {alerts_url}", flush=True)
        linked: list[Mapping[str, object]] = []
        if use_standins:
            servers = stack.enter_context(
                demo.standins(
                    SeedSpec.demo(end=date.today()), args.stripe_port, args.plaid_port,
                    receiver, args.live_interval,
                )
            )  # fmt: skip
            linked = list(servers.plaid_items())
            log.info("stand-ins up", stripe=servers.stripe_url, plaid=servers.plaid_url)
        demo.onboard_and_backfill(sor.dsn, providers, linked)
        dashboard_url = stack.enter_context(
            dashboard_server(
                config_for(settings.state_dir, sor.dsn, secret := dashboard_secret(demo=True)),
                "127.0.0.1",
                dashboard_port(),
            )
        )
        with psycopg.connect(sor.dsn) as conn:
            tenant_ids = [int(str(r[0])) for r in conn.execute(
                "select tenant_id from ledger.tenants order by 1"
            )]  # fmt: skip
        for who, url in login_urls(dashboard_url, secret, tenant_ids).items():
            print(f"dashboard login ({who}): {url}", flush=True)
        env = {
            **os.environ,
            **providers.as_env(),
            "LEDGER_PG_DSN": sor.dsn,
            "LEDGER_LAKE_ROOT": lake_root,
            # The marts are published under the state folder, where the dashboard reads them.
            "LEDGER_STATE_DIR": str(settings.state_dir),
            # dagster.yaml in the project root is the instance configuration, used as it is.
            "DAGSTER_HOME": str(PROJECT_ROOT),
            "LEDGER_ALERT_WEBHOOK_URL": alerts_url,
        }
        command = [
            sys.executable, "-m", "dagster", "dev",
            "-w", str(PROJECT_ROOT / "workspace.yaml"),
            "-h", args.host, "-p", str(args.port),
        ]  # fmt: skip
        log.info("starting dagster dev", url=f"http://{args.host}:{args.port}")
        child = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env)
        try:
            return child.wait()
        except KeyboardInterrupt:
            child.send_signal(signal.SIGINT)
            try:
                return child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                return child.wait()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ledger", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    db = commands.add_parser("db", help="manage the private Postgres cluster")
    db.add_argument("action", choices=["start", "stop", "status", "dsn"])
    db.set_defaults(handler=_db)

    commands.add_parser("migrate", help="apply pending migrations").set_defaults(handler=_migrate)

    seed = commands.add_parser("seed", help="load synthetic data into the system of record")
    seed.add_argument("--rows", type=int, help="total rows across all tables (default: demo size)")
    seed.add_argument("--tenants", type=int, default=1000)
    seed.add_argument("--years", type=float, default=3.0)
    seed.add_argument("--seed", type=int, default=None)
    seed.set_defaults(handler=_seed)

    demo = commands.add_parser("demo", help="start everything and run dagster dev")
    demo.add_argument("--host", default=os.environ.get("LEDGER_DAGSTER_HOST", "127.0.0.1"))
    demo.add_argument(
        "--port", type=int, default=int(os.environ.get("LEDGER_DAGSTER_PORT", "3000"))
    )
    demo.add_argument("--keep-db-running", action="store_true")
    demo.add_argument(
        "--keep-data",
        action="store_true",
        help="keep the previous demo's data (stand-in cursors will not match)",
    )
    demo.add_argument(
        "--webhook-port", type=int, default=int(os.environ.get("LEDGER_WEBHOOK_PORT", "8010"))
    )
    demo.add_argument(
        "--alert-port",
        type=int,
        default=int(os.environ.get("LEDGER_ALERT_PAGE_PORT", "8011")),
        help="the local alert page (a Slack stand-in), unless LEDGER_ALERT_WEBHOOK_URL is set",
    )
    demo.add_argument("--stripe-port", type=int, default=12111, help="the Stripe stand-in's port")
    demo.add_argument("--plaid-port", type=int, default=12112, help="the Plaid stand-in's port")
    demo.add_argument(
        "--live-interval",
        type=float,
        default=8.0,
        help="seconds between live stand-in activity ticks",
    )
    demo.set_defaults(handler=_demo)
    return parser


def _interrupt_on_sigterm(signum: int, frame: object) -> None:
    # `timeout`, systemd and container runtimes stop a process with SIGTERM. Treat it like
    # Ctrl-C so that the demo's stand-ins, receiver, dagster dev and cluster are all stopped.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    configure_logging(os.environ.get("LEDGER_LOG_LEVEL", "INFO"))
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    handle_sigint_if_ignored()  # else dagster dev inherits an ignored SIGINT (lib/signals.py)
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        return int(args.handler(args, settings))
    except USER_ERRORS as exc:
        print(f"ledger: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
