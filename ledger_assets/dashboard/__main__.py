"""``python -m ledger_assets.dashboard``: serve the dashboard on 127.0.0.1:$LEDGER_DASHBOARD_PORT.

Reads the marts under ``$LEDGER_STATE_DIR/marts`` and the tenant directory from
``$LEDGER_PG_DSN`` (or the private cluster); prints a login link per tenant.
"""

from __future__ import annotations

import sys

import psycopg
import uvicorn

from ledger_assets.dashboard.app import build_dashboard
from ledger_assets.dashboard.server import config_for, dashboard_port, dashboard_secret, login_urls
from ledger_assets.lib.settings import Settings
from ledger_assets.lib.sor import bootstrap


def main() -> int:
    settings = Settings.from_env()
    dsn = settings.pg_dsn or bootstrap.private_cluster(settings).dsn()
    secret = dashboard_secret(demo=True)
    port = dashboard_port()
    config = config_for(settings.state_dir, dsn, secret)
    with psycopg.connect(dsn) as conn:
        tenants = [
            int(r[0]) for r in conn.execute("select tenant_id from ledger.tenants order by 1")
        ]
    for who, url in login_urls(f"http://127.0.0.1:{port}", secret, tenants).items():
        print(f"dashboard login ({who}): {url}")
    uvicorn.run(build_dashboard(config), host="127.0.0.1", port=port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
