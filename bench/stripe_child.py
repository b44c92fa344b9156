"""One Stripe backfill in a process of its own, so that its peak RSS is its own.

Prints one JSON line: objects fetched, rows written, seconds, objects/s and peak RSS in MB
(the largest single process: the parent or one of its workers).
"""

from __future__ import annotations

import argparse
import json
import resource

import psycopg

from ledger_assets.lib.ingest.stripe_pull import StripeAccount, pull_accounts
from ledger_assets.lib.sor.catalog import stripe_accounts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with psycopg.connect(args.dsn) as conn:
        accounts = [StripeAccount(t, a) for t, a in stripe_accounts(conn)]
    report = pull_accounts(args.dsn, args.api_key, args.api_base, accounts, workers=args.workers)
    # The largest of this process and its worker processes (each worker's own peak).
    peak_kb = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    print(
        json.dumps(
            {
                "fetched": report.fetched,
                "written": report.written,
                "seconds": report.seconds,
                "objects_per_second": report.objects_per_second,
                "peak_rss_mb": peak_kb / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
