"""A late dispute through a running deployment: from its commit to the published marts.

``python -m bench late_dispute`` measures the work of the path (capture, the two runs, the
sensor's tick), calling each tick at once. In a deployment the daemon's polling comes on top:
the CDC sensor's next tick, the run queue's dequeue pass, the late-arrivals sensor's next tick.
This tool measures all of it against a running ``scripts/demo`` (or any deployment whose state
folder it can read):

    python -m bench.live_dispute --disputes 4

It finds the deployment as the ``ledger`` command does (``LEDGER_STATE_DIR``, default
``.state``; ``LEDGER_PG_DSN``, default the private cluster there).

Each dispute is committed straight into Postgres through the ingestion writer, on a succeeded
charge 100-150 days old (as the ``late_dispute`` workload does), and the clock stops when the
published marts snapshot's source tag for the charge's (tenant, cohort day) moves past the WAL
position taken just before the commit: the marts include the dispute. For a figure free of
other traffic, stop the ingestion sensors and schedules first (the Dagster UI, or GraphQL's
``stopSensor``/``stopRunningSchedule``); with them on, the dispute's marts run may queue behind
other late-arrival runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg
import pyarrow.parquet as pq

from bench.workloads.late_dispute import open_dispute
from ledger_assets.lib.cdc.lsn import Lsn
from ledger_assets.lib.marts.export import SOURCE_TAGS, current_snapshot
from ledger_assets.lib.settings import Settings
from ledger_assets.lib.sor.pgcluster import DEFAULT_DATABASE, PrivateCluster


def _tag(export_root: Path, tenant: int, day: date) -> int | None:
    snapshot = current_snapshot(export_root)
    if snapshot is None:
        return None
    tags = pq.read_table(
        snapshot / f"{SOURCE_TAGS}.parquet",
        filters=[("tenant_id", "=", tenant), ("local_date", "=", day)],
    )
    values = tags.column("source_lsn").to_pylist()
    return max(values) if values else None


def measure(dsn: str, export_root: Path, timeout: float) -> tuple[str, float]:
    """Commit one late dispute; seconds until the published marts include it."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("select pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    before = int(Lsn.parse(str(row[0])))
    dispute = open_dispute(dsn, datetime.now(UTC))
    committed = time.monotonic()
    with psycopg.connect(dsn) as conn:
        found = conn.execute(
            "select c.tenant_id, (c.created at time zone t.time_zone)::date "
            "from ledger.stripe_disputes d join ledger.stripe_charges c on c.id = d.charge "
            "join ledger.tenants t on t.tenant_id = c.tenant_id where d.id = %s",
            (dispute,),
        ).fetchone()
    assert found is not None
    tenant, cohort = int(str(found[0])), found[1]
    assert isinstance(cohort, date)
    while time.monotonic() - committed < timeout:
        tag = _tag(export_root, tenant, cohort)
        if tag is not None and tag > before:
            return dispute, time.monotonic() - committed
        time.sleep(0.1)
    raise TimeoutError(f"{dispute}: the marts did not include it within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--disputes", type=int, default=4)
    parser.add_argument("--pause", type=float, default=13.0, help="seconds between disputes")
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args()
    settings = Settings.from_env()
    dsn = settings.pg_dsn or PrivateCluster(
        settings.private_cluster_root, settings.private_pg_port
    ).dsn(DEFAULT_DATABASE)
    seconds = []
    for number in range(args.disputes):
        if number:
            time.sleep(args.pause)  # start each one at a different phase of the sensors' ticks
        dispute, took = measure(dsn, settings.state_dir / "marts", args.timeout)
        seconds.append(took)
        print(f"{dispute}: commit -> published marts {took:.1f} s", flush=True)
    print(
        f"{len(seconds)} disputes: median {statistics.median(seconds):.1f} s, "
        f"min {min(seconds):.1f} s, max {max(seconds):.1f} s"
    )


if __name__ == "__main__":
    main()
