"""Measure how fast the Stripe stand-in serves list pages to the real SDK.

``python -m ledger_assets.lib.standins.measure --rows 1000000 --resource charges``

starts the stand-ins in a child process (its own interpreter, as in the benchmark), then pages
through every account's ``/v1/<resource>`` with ``StripeClient.raw_request`` (the SDK's auth,
headers and retries, without its slow object model) and ``limit=100``, parsing each body with
``json.loads`` as a client must to find the next cursor. Prints pages/s, objects/s, and the
server's CPU time and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import stripe

from ledger_assets.lib.standins.server import DEFAULT_STRIPE_API_KEY, StandinServers
from ledger_assets.lib.synth.spec import SeedSpec


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(spec: SeedSpec, resource: str, max_objects: int | None) -> dict[str, float]:
    """Page through ``resource`` of every account.

    Returns:
        Rates, and the server's CPU time and peak RSS.
    """
    started = time.perf_counter()
    servers = StandinServers.start(spec, in_process=False)
    build_s = time.perf_counter() - started
    try:
        client = stripe.StripeClient(
            DEFAULT_STRIPE_API_KEY,
            base_addresses={"api": servers.stripe_url},
            max_network_retries=2,
        )
        accounts = json.loads(client.raw_request("get", "/v1/accounts", limit=100).body)["data"]
        while len(accounts) % 100 == 0 and accounts:
            more = json.loads(
                client.raw_request(
                    "get", "/v1/accounts", limit=100, starting_after=accounts[-1]["id"]
                ).body
            )["data"]
            if not more:
                break
            accounts += more
        pages = objects = 0
        pid = servers.pid
        cpu0, t0 = _cpu_s(pid), time.perf_counter()
        for account in accounts:
            params: dict[str, object] = {"limit": 100}
            while True:
                body = json.loads(
                    client.raw_request(
                        "get", f"/v1/{resource}", stripe_account=account["id"], **params
                    ).body
                )
                pages += 1
                objects += len(body["data"])
                if not body["has_more"] or (max_objects and objects >= max_objects):
                    break
                params["starting_after"] = body["data"][-1]["id"]
            if max_objects and objects >= max_objects:
                break
        elapsed = time.perf_counter() - t0
        server_cpu = _cpu_s(pid) - cpu0
        rss = _peak_rss_mb(pid)
    finally:
        servers.stop()
    return {
        "build_s": build_s,
        "pages": pages,
        "objects": objects,
        "seconds": elapsed,
        "pages_per_s": pages / elapsed,
        "objects_per_s": objects / elapsed,
        "server_cpu_s": server_cpu,
        # What the server alone could sustain on one core, client costs excluded.
        "server_objects_per_cpu_s": objects / server_cpu if server_cpu else float("nan"),
        "server_peak_rss_mb": rss,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="SeedSpec.scale total rows")
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--resource", default="charges")
    parser.add_argument("--max-objects", type=int, default=None)
    args = parser.parse_args(argv)
    spec = SeedSpec.scale(args.rows, tenants=args.tenants)
    print(json.dumps(measure(spec, args.resource, args.max_objects), indent=2))


if __name__ == "__main__":
    main()
