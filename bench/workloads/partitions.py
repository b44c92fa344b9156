"""``partitions``: Dagster's partition machinery at the lake's target scale, for three designs.

Issue 4: "measure the partition count, the UI asset page, the sensor tick time and the file
count at that scale, and choose the design from the measurements". The lake assets are
``MultiPartitionsDefinition(day x dynamic tenant)``; Dagster advises at most 100,000 partitions
per asset. One instance, one code location (``bench/partition_scale_defs.py``) with the same
table under three designs side by side — day x tenant (the lake's), month x tenant, day only —
``--tenants`` tenants registered, and the same steady-state history recorded for each: every
tenant's last ``RECENT_DAYS`` days materialized (what CDC rewrites), as runless events. Dagster's
storage is Postgres, as in the production configuration (``docs/deploy/dagster.yaml``). Then:

* in process: counting the keys, enumerating them, and the tenant lookup a sensor tick does;
* through a real ``dagster-webserver``: the asset page's partition-health GraphQL query (the
  one the UI runs: keys per dimension plus materialization status ranges) and the partition
  stats of the catalog, first call and warm.

``python -m bench partitions --tenants 1000``
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import dagster as dg
from psycopg.conninfo import conninfo_to_dict

from bench.core import Context, Figure, workload
from bench.partition_scale_defs import DESIGNS, TENANTS

RECENT_DAYS = 14
ROOT = Path(__file__).resolve().parents[2]

HEALTH_QUERY = """
query PartitionHealth($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      partitionKeysByDimension { name partitionKeys }
      partitionStats { numMaterialized numPartitions }
      assetPartitionStatuses {
        ... on TimePartitionStatuses { ranges { status startKey endKey } }
        ... on DefaultPartitionStatuses { materializedPartitions }
        ... on MultiPartitionStatuses {
          primaryDimensionName
          ranges {
            primaryDimStartKey primaryDimEndKey
            secondaryDim {
              ... on TimePartitionStatuses { ranges { status startKey endKey } }
              ... on DefaultPartitionStatuses { materializedPartitions }
            }
          }
        }
      }
    }
  }
}
"""


def _graphql(port: int, query: str, variables: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        data: dict[str, object] = json.loads(response.read())
    assert "errors" not in data, data
    return data


def _url(dsn: str) -> str:
    """A libpq DSN as the URL Dagster's Postgres storage takes.

    The driver is named: SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, whose
    server-side parameters break dagster-postgres's ``NOTIFY run_events, %s``.
    """
    parts = conninfo_to_dict(dsn)
    user, password = quote(str(parts["user"]), safe=""), quote(str(parts.get("password", "")))
    return (
        f"postgresql+psycopg2://{user}:{password}@{parts['host']}:{parts['port']}/{parts['dbname']}"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _recent_keys(design: str, tenants: list[str], today: date) -> list[str | dg.MultiPartitionKey]:
    days = [today - timedelta(days=n) for n in range(RECENT_DAYS)]
    if design == "day_only":
        return [d.isoformat() for d in days]
    dates = sorted({d.replace(day=1) if design == "month_x_tenant" else d for d in days})
    return [
        dg.MultiPartitionKey({"date": d.isoformat(), "tenant": t}) for d in dates for t in tenants
    ]


def _wait_loaded(port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()
        try:
            data = _graphql(port, "{ version }", {})
            if data.get("data"):
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"dagster-webserver did not answer: {log.read_text()[-2000:]}")


@workload("partitions")
def partitions(ctx: Context) -> list[Figure]:
    home = Path(tempfile.mkdtemp(prefix="ledger-bench-partitions-"))
    with ctx.fresh_database("dagster") as dsn:
        storage = {"postgres": {"postgres_url": _url(dsn)}}
        # JSON is YAML.
        (home / "dagster.yaml").write_text(
            json.dumps({"storage": storage, "telemetry": {"enabled": False}})
        )
        figures = _measure(ctx, home, dg.DagsterInstance.from_config(str(home)))
    shutil.rmtree(home, ignore_errors=True)
    return figures


def _measure(ctx: Context, home: Path, instance: dg.DagsterInstance) -> list[Figure]:
    figures: list[Figure] = []
    try:
        tenants = [str(t) for t in range(1, ctx.options.tenants + 1)]
        assert TENANTS.name is not None
        started = time.perf_counter()
        instance.add_dynamic_partitions(TENANTS.name, tenants)
        figures.append(Figure("register tenants", time.perf_counter() - started, "s"))
        started = time.perf_counter()
        known = set(instance.get_dynamic_partitions(TENANTS.name))
        assert len(known) == len(tenants)
        figures.append(
            Figure("sensor tick: read registered tenants", (time.perf_counter() - started) * 1e3,
                   "ms")
        )  # fmt: skip

        today = datetime.now(UTC).date()
        for design, partitions_def in DESIGNS.items():
            with dg.partition_loading_context(dynamic_partitions_store=instance):
                started = time.perf_counter()
                count = partitions_def.get_num_partitions()
                counted = time.perf_counter() - started
                started = time.perf_counter()
                keys = partitions_def.get_partition_keys()
                listed = time.perf_counter() - started
            assert len(keys) == count
            figures += [
                Figure(f"{design}: partition keys per asset", count, "keys"),
                Figure(f"{design}: count the keys", counted * 1e3, "ms"),
                Figure(f"{design}: enumerate the keys", listed * 1e3, "ms"),
            ]
            recent = _recent_keys(design, tenants, today)
            started = time.perf_counter()
            for key in recent:
                instance.report_runless_asset_event(
                    dg.AssetMaterialization(asset_key=["bench", design], partition=key)
                )
            seconds = time.perf_counter() - started
            figures.append(Figure(f"{design}: record {len(recent)} materializations", seconds, "s"))

        port = _free_port()
        log = home / "webserver.log"
        env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(ROOT)}
        with log.open("w") as out:
            server = subprocess.Popen(
                [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port),
                 "-m", "bench.partition_scale_defs"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            _wait_loaded(port, server, log)
            for design in DESIGNS:
                variables: dict[str, object] = {"key": {"path": ["bench", design]}}
                times = []
                for _ in range(3):
                    started = time.perf_counter()
                    data = _graphql(port, HEALTH_QUERY, variables)
                    times.append(time.perf_counter() - started)
                node = data["data"]["assetNodeOrError"]  # type: ignore[index]
                stats = node["partitionStats"]
                figures += [
                    Figure(f"{design}: UI partition health, first call", times[0] * 1e3, "ms"),
                    Figure(f"{design}: UI partition health, warm", min(times[1:]) * 1e3, "ms"),
                    Figure(f"{design}: materialized / partitions (UI)",
                           stats["numMaterialized"] / stats["numPartitions"] * 100, "%"),
                    Figure(f"{design}: UI response size", len(json.dumps(data)) / 1e3, "kB"),
                ]  # fmt: skip
        finally:
            server.terminate()
            server.wait(timeout=60)
    finally:
        instance.dispose()
    return figures
