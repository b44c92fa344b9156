"""A real browser: Debian's headless Chromium logs in with a tenant's link and renders the page.

Rendering is driven from Chromium's command line (``--dump-dom`` / ``--screenshot`` with a
virtual-time budget), so no browser-driver dependency. The rendered totals are compared with the
marts, and a screenshot is saved for a human to look at (its path is printed). The live-update
test keeps a page open and talks to it over the DevTools protocol (a WebSocket), because the
page must stay open while a new snapshot is published.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from html import unescape
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from ledger_assets.dashboard.auth import mint_token
from ledger_assets.dashboard.queries import REPORTS, format_minor
from ledger_assets.lib.money import CURRENCY_EXPONENTS
from tests.dashboard.conftest import SECRET, Dashboard

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def chromium() -> str:
    for path in (os.environ.get("LEDGER_CHROMIUM", ""), *CANDIDATES):
        if path and Path(path).exists():
            return path
    found = shutil.which("chromium")
    assert found, (
        "the browser test needs Debian's chromium: apt-get install -y chromium "
        "(or set LEDGER_CHROMIUM to a Chromium executable)"
    )
    return found


def run_chromium(url: str, profile: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    command = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
        "--virtual-time-budget=15000", "--window-size=1400,2200", *mode, url,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


def test_tenant_logs_in_and_sees_the_marts_numbers(dashboard: Dashboard) -> None:
    tenant = dashboard.a
    token = mint_token(SECRET, tenant_id=tenant, ttl_seconds=600)
    url = f"{dashboard.url}/#token={token}"
    out = Path(tempfile.mkdtemp(prefix="ledger-dashboard-browser-"))
    dom = run_chromium(url, out / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    (out / "dashboard.html").write_text(html)
    assert 'id="report-pnl"' in html, html[-3000:]
    totals = {
        key: unescape(value)
        for key, value in re.findall(r'data-total="([^"]+)"[^>]*>([^<]*)<', html)
    }
    # Every view rendered, with the snapshot's source position on each.
    for name in REPORTS:
        assert f'id="report-{name}"' in html, name
        lsn = re.search(rf'data-lsn="{name}"[^>]*>([^<]*)<', html)
        assert lsn is not None, name
        assert lsn.group(1) == dashboard.source_lsn, name
    assert re.search(r'data-recon="pnl"[^>]*>mismatch<', html)
    # The P&L totals of the default 90 days equal the marts, formatted in major units.
    pnl = dashboard.mart("daily_pnl").to_pylist()
    mine = [r for r in pnl if r["tenant_id"] == tenant]
    end = max(r["local_date"] for r in mine)
    window = [r for r in mine if (end - r["local_date"]).days < 90]
    currency = window[0]["currency"]
    exponent = CURRENCY_EXPONENTS[currency]
    for column in ("revenue", "net", "fees", "gross_charges", "payouts"):
        expected = format_minor(sum(r[column] for r in window), exponent)
        assert totals[f"pnl:{currency}:{column}"] == expected, column
    months = [r for r in dashboard.mart("monthly_revenue").to_pylist() if r["tenant_id"] == tenant]
    start = date.fromordinal(end.toordinal() - 365)
    expected_rev = sum(r["revenue"] for r in months if start <= r["month_start"] <= end)
    assert totals[f"monthly_revenue:{currency}:revenue"] == format_minor(expected_rev, exponent)
    # Another tenant's numbers are nowhere on the page.
    # The tenant picker offers this tenant only; the other tenant is nowhere on the page.
    assert re.findall(r'<option value="(\d+)"', html) == [str(tenant)]
    assert dashboard.tenants[dashboard.b].name not in html

    shot = out / "dashboard.png"
    taken = run_chromium(url, out / "profile-shot", f"--screenshot={shot}")
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.exists()
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_a_bad_token_renders_no_numbers(dashboard: Dashboard) -> None:
    token = mint_token("another-secret-" + "y" * 40, tenant_id=dashboard.a, ttl_seconds=600)
    out = Path(tempfile.mkdtemp(prefix="ledger-dashboard-browser-"))
    try:
        dom = run_chromium(f"{dashboard.url}/#token={token}", out / "profile", "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert 'id="auth-error"' in dom.stdout
        assert "data-total" not in dom.stdout
        assert 'id="report-' not in dom.stdout
    finally:
        shutil.rmtree(out, ignore_errors=True)


class Page:
    """One Chromium tab over the DevTools protocol: evaluate JavaScript, take a screenshot."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        sent = next(self._ids)
        self._ws.send(json.dumps({"id": sent, "method": method, "params": params}))
        while True:  # events arrive between answers; only our answer matters
            message = json.loads(self._ws.recv(timeout=30))
            if message.get("id") == sent:
                assert "error" not in message, message
                result: dict[str, Any] = message["result"]
                return result

    def value(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> Any:
        """The value of ``expression`` once it is truthy."""
        deadline = time.monotonic() + timeout
        while not (found := self.value(expression)):
            assert time.monotonic() < deadline, f"never true: {expression}"
            time.sleep(0.1)
        return found


@contextmanager
def open_page(url: str, profile: Path) -> Iterator[Page]:
    command = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
        "--remote-debugging-port=0", "--window-size=1400,2200", "about:blank",
    ]  # fmt: skip
    browser = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert browser.stderr is not None
        port = None
        while port is None:
            line = browser.stderr.readline()
            assert line, "chromium exited before listening for DevTools"
            found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            port = found.group(1) if found else None
        (tab,) = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json()
                  if t["type"] == "page"]  # fmt: skip
        with connect(tab["webSocketDebuggerUrl"], max_size=None) as ws:
            page = Page(ws)
            page.call("Page.navigate", url=url)
            yield page
    finally:
        browser.terminate()
        browser.wait(timeout=30)


def test_a_new_snapshot_moves_a_number_on_the_open_page(dashboard: Dashboard) -> None:
    """The page polls the snapshot version; a late dispute's snapshot moves the P&L total."""
    tenant = dashboard.a
    token = mint_token(SECRET, tenant_id=tenant, ttl_seconds=600)
    pnl = [r for r in dashboard.mart("daily_pnl").to_pylist() if r["tenant_id"] == tenant]
    day = max(r["local_date"] for r in pnl)
    currency = next(r["currency"] for r in pnl if r["local_date"] == day)
    exponent = CURRENCY_EXPONENTS[currency]
    total = f"document.querySelector('[data-total=\"pnl:{currency}:revenue\"]')?.textContent"
    rendered = "document.body.dataset.rendered"
    out = Path(tempfile.mkdtemp(prefix="ledger-dashboard-live-"))
    try:
        with open_page(f"{dashboard.url}/#token={token}", out / "profile") as page:
            before_stamp = dashboard.snapshot_dir().name
            page.wait_for(f"{rendered} === {json.dumps(before_stamp)} && {total}")
            before = page.value(total)
            stamp = dashboard.publish_with_one_day_changed(tenant, day, bump=-12345)
            # The next poll (every poll_seconds) sees the new version and re-renders the views.
            page.wait_for(f"{rendered} === {json.dumps(stamp)}", timeout=30)
            after = page.value(total)
            shot = page.call("Page.captureScreenshot", format="png")
            (out / "live.png").write_bytes(base64.b64decode(shot["data"]))
        minor = int(before.replace(",", "").replace(".", ""))
        assert after == format_minor(minor - 12345, exponent), (before, after)
    finally:
        dashboard.republish()
    print(f"screenshot after the update: {out / 'live.png'}")
