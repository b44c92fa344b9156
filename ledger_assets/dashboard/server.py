"""Serving the dashboard: in a background thread (the demo) or in the foreground (``__main__``)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from ledger_assets.dashboard.app import DashboardConfig, build_dashboard
from ledger_assets.dashboard.auth import mint_token
from ledger_assets.lib.asgi import serve_in_thread
from ledger_assets.lib.logs import get_logger

log = get_logger(__name__)

DEFAULT_PORT = 8050


def dashboard_port(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    text = env.get("LEDGER_DASHBOARD_PORT") or str(DEFAULT_PORT)
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"LEDGER_DASHBOARD_PORT={text!r} is not a TCP port number")
    return int(text)


def dashboard_secret(env: Mapping[str, str] | None = None, *, demo: bool = False) -> str:
    """``LEDGER_DASHBOARD_SECRET``; for the demo only, a random one for this process."""
    env = os.environ if env is None else env
    secret = env.get("LEDGER_DASHBOARD_SECRET") or ""
    if secret:
        return secret
    if demo:
        log.warning("LEDGER_DASHBOARD_SECRET is not set: the demo signs tokens with a random key")
        return secrets.token_urlsafe(48)
    raise ValueError("LEDGER_DASHBOARD_SECRET is not set (at least 32 random bytes)")


def config_for(state_dir: Path, dsn: str, secret: str) -> DashboardConfig:
    """The dashboard over the marts the ``ledger_marts`` asset publishes under ``state_dir``."""
    return DashboardConfig(export_root=state_dir / "marts", secret=secret, dsn=dsn)


def login_urls(
    base_url: str, secret: str, tenant_ids: Iterable[int], ttl_seconds: int = 12 * 3600
) -> dict[str, str]:
    """One login link per tenant plus an admin link; the token rides in the URL fragment,
    which browsers never send to the server, and the page moves it to sessionStorage."""
    urls: dict[str, str] = {}
    for t in tenant_ids:
        token = mint_token(secret, tenant_id=t, ttl_seconds=ttl_seconds, subject=f"demo-tenant-{t}")
        urls[f"tenant {t}"] = f"{base_url}/#token={token}"
    admin = mint_token(secret, tenant_id=None, role="admin", ttl_seconds=ttl_seconds,
                       subject="demo-admin")  # fmt: skip
    urls["admin"] = f"{base_url}/#token={admin}"
    return urls


@contextmanager
def dashboard_server(config: DashboardConfig, host: str, port: int) -> Iterator[str]:
    """The dashboard served by uvicorn in a background thread; yields the base URL."""
    with serve_in_thread(build_dashboard(config), host, port, "dashboard") as url:
        yield url
