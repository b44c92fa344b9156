"""``python -m ledger_assets.lib.standins``: serve the Stripe and Plaid stand-ins.

Example::

    python -m ledger_assets.lib.standins --stripe-port 12111 --plaid-port 12112 --seed 7 --live \
        --webhook-url-stripe http://127.0.0.1:3001/webhooks/stripe \
        --webhook-url-plaid http://127.0.0.1:3001/webhooks/plaid

When both servers listen, one line ``STANDINS-READY {"stripe_url": ..., "plaid_url": ...}`` is
printed to stdout.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from datetime import UTC, date, datetime

from ledger_assets.lib.standins.server import (
    DEFAULT_PLAID_CLIENT_ID,
    DEFAULT_PLAID_SECRET,
    DEFAULT_STRIPE_API_KEY,
    DEFAULT_STRIPE_WEBHOOK_SECRET,
    StandinConfig,
    serve_forever,
)
from ledger_assets.lib.synth.spec import SeedSpec


def spec_from_name(name: str, seed: int, end: date | None) -> SeedSpec:
    """A spec by name: ``demo`` (120 days ending ``end``, default today UTC), ``demo-fixed``
    (the default Feb-May 2025 window), ``scale:<rows>[:<tenants>]`` (benchmarks).

    Raises:
        ValueError: an unknown name.
    """
    if name == "demo":
        return SeedSpec.demo(seed=seed, end=end or datetime.now(UTC).date())
    if name == "demo-fixed":
        return SeedSpec.demo(seed=seed)
    if name.startswith("scale:"):
        parts = name.split(":")[1:]
        rows = int(parts[0])
        tenants = int(parts[1]) if len(parts) > 1 else 1000
        return SeedSpec.scale(rows, tenants=tenants, seed=seed)
    raise ValueError(f"unknown spec {name!r}: use demo, demo-fixed or scale:<rows>[:<tenants>]")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ledger_assets.lib.standins", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--stripe-port", type=int, default=0)
    parser.add_argument("--plaid-port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--seed", type=int, default=SeedSpec().seed)
    parser.add_argument(
        "--spec", default="demo", help="demo | demo-fixed | scale:<rows>[:<tenants>]"
    )
    parser.add_argument(
        "--end",
        type=date.fromisoformat,
        default=None,
        help="last day + 1 of the demo history (default: today, UTC)",
    )
    parser.add_argument("--live", action="store_true", help="produce activity continuously")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between live ticks")
    parser.add_argument("--webhook-url-stripe", default=None)
    parser.add_argument("--webhook-url-plaid", default=None)
    parser.add_argument("--config-json", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.config_json:
        config = StandinConfig.from_json(args.config_json)
    else:
        env = os.environ
        config = StandinConfig(
            spec=spec_from_name(args.spec, args.seed, args.end),
            live=args.live,
            interval_s=args.interval,
            host=args.host,
            stripe_port=args.stripe_port,
            plaid_port=args.plaid_port,
            stripe_api_key=env.get("STRIPE_API_KEY") or DEFAULT_STRIPE_API_KEY,
            stripe_webhook_secret=env.get("STRIPE_WEBHOOK_SECRET") or DEFAULT_STRIPE_WEBHOOK_SECRET,
            stripe_webhook_url=args.webhook_url_stripe,
            plaid_webhook_url=args.webhook_url_plaid,
            plaid_client_id=env.get("PLAID_CLIENT_ID") or DEFAULT_PLAID_CLIENT_ID,
            plaid_secret=env.get("PLAID_SECRET") or DEFAULT_PLAID_SECRET,
        )
    serve_forever(config)


if __name__ == "__main__":
    main()
