"""The dashboard's HTTP API over real marts: every view, cross-tenant probes, exports, freshness."""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import jwt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ledger_assets.dashboard.app import DashboardConfig, build_dashboard
from ledger_assets.dashboard.auth import mint_token
from ledger_assets.dashboard.queries import REPORTS, ResultCache
from ledger_assets.dashboard.snapshot import SourceTags, WouldBlock
from ledger_assets.lib.marts.export import POINTER, SNAPSHOTS
from tests.dashboard.conftest import CHECKED_AT, SECRET, Dashboard
from tests.http_server import serve


def token(tenant: int | None, **kw: Any) -> str:
    return mint_token(SECRET, tenant_id=tenant, role="admin" if tenant is None else "tenant", **kw)


def get(
    d: Dashboard, path: str, tok: str | None, headers: dict[str, str] | None = None, **kw: Any
) -> httpx.Response:
    sent = dict(headers or {})
    if tok is not None:
        sent["Authorization"] = f"Bearer {tok}".strip()
    return httpx.get(d.url + path, headers=sent, timeout=30, **kw)


def assert_refused(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    # A refusal carries an error message and nothing else: no rows, no totals, no metadata.
    assert set(response.json()) == {"error"}
    assert len(response.content) < 200


@pytest.mark.parametrize("which", ["a", "b"])
@pytest.mark.parametrize("report", sorted(REPORTS))
def test_every_view_matches_the_marts(dashboard: Dashboard, which: str, report: str) -> None:
    tenant = getattr(dashboard, which)
    response = get(dashboard, f"/api/tenants/{tenant}/reports/{report}", token(tenant))
    assert response.status_code == 200, response.text
    body = response.json()
    spec = REPORTS[report]
    start, end = (date.fromisoformat(body["period"][k]) for k in ("start", "end"))
    assert (end - start).days == spec.default_days - 1
    expected = dashboard.report_rows(report, tenant, start, end)
    if report != "reconciliation":
        assert expected.num_rows > 0
        # The default period ends at the tenant's newest day in the mart.
        mart = dashboard.mart(spec.mart).to_pylist()
        assert end == max(r[spec.date_column] for r in mart if r["tenant_id"] == tenant)
    assert len(body["rows"]) == expected.num_rows
    # Exact equality of every money and count column, row by row.
    for col in spec.columns:
        if col.kind in ("money", "count"):
            got = [row[body["columns"].index(col.name)] for row in body["rows"]]
            assert got == expected.column(col.name).to_pylist(), col.name
            if col.total == "sum":
                (total,) = body["totals"] if expected.num_rows else ({"values": {col.name: 0}},)
                assert total["values"][col.name] == sum(got)
    assert body["tenant"]["tenant_id"] == tenant
    assert body["tenant"]["time_zone"] == dashboard.tenants[tenant].time_zone
    assert body["meta"]["source_lsn"] == dashboard.source_lsn
    assert body["meta"]["snapshot"] == dashboard.snapshot_dir().name


def test_reconciliation_status_and_last_check_in_the_tenants_zone(dashboard: Dashboard) -> None:
    a = dashboard.a
    body = get(dashboard, f"/api/tenants/{a}/reports/pnl", token(a)).json()
    recon = body["reconciliation"]
    assert recon["status"] == "mismatch"
    assert recon["days_mismatch"] == 1
    assert recon["days_match"] == 9
    assert recon["watermark_lsn"] == "0/ABCDEF"
    assert recon["last_checked_at"].startswith("2025-04-16T09:30:00")
    zone = ZoneInfo(dashboard.tenants[a].time_zone)
    local = CHECKED_AT.astimezone(zone)
    assert recon["last_checked_at_local"] == local.strftime("%Y-%m-%d %H:%M:%S %Z")
    view = get(dashboard, f"/api/tenants/{a}/reports/reconciliation", token(a)).json()
    cols = view["columns"]
    mismatched = [r for r in view["rows"] if r[cols.index("status")] == "mismatch"]
    assert [r[cols.index("local_date")] for r in mismatched] == [dashboard.mismatch_day.isoformat()]
    assert "txn_missing_1" in mismatched[0][cols.index("mismatch_details")]
    assert mismatched[0][cols.index("last_checked_at")] == recon["last_checked_at_local"]


def test_balance_totals_are_opening_and_closing(dashboard: Dashboard) -> None:
    a = dashboard.a
    body = get(dashboard, f"/api/tenants/{a}/reports/balance", token(a)).json()
    cols = body["columns"]
    (total,) = body["totals"]
    first, last = body["rows"][0], body["rows"][-1]
    assert total["values"]["opening_balance"] == first[cols.index("opening_balance")]
    assert total["values"]["closing_balance"] == last[cols.index("closing_balance")]
    v = total["values"]
    assert v["opening_balance"] + v["activity"] + v["payouts"] == v["closing_balance"]


def test_a_chosen_period(dashboard: Dashboard) -> None:
    a = dashboard.a
    first = get(dashboard, f"/api/tenants/{a}/reports/pnl", token(a)).json()
    end = date.fromisoformat(first["period"]["end"])
    start = end - timedelta(days=6)
    body = get(
        dashboard, f"/api/tenants/{a}/reports/pnl", token(a),
        params={"start": start.isoformat(), "end": end.isoformat()},
    ).json()  # fmt: skip
    assert {r[0] for r in body["rows"]} == {(start + timedelta(d)).isoformat() for d in range(7)}
    for bad in ({"start": "yesterday"}, {"start": end.isoformat(), "end": start.isoformat()},
                {"start": "2000-01-01", "end": "2025-01-01"}):  # fmt: skip
        assert_refused(get(dashboard, f"/api/tenants/{a}/reports/pnl", token(a), params=bad), 400)
    assert_refused(get(dashboard, f"/api/tenants/{a}/reports/nope", token(a)), 404)


# ------------------------------------------------------------------ access


def _tampered(tok: str, **changes: Any) -> str:
    header, payload, signature = tok.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    raw = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{raw}.{signature}"


def test_credentials_that_are_not_valid_get_401_and_no_data(dashboard: Dashboard) -> None:
    a, b = dashboard.a, dashboard.b
    path = f"/api/tenants/{b}/reports/pnl"
    now = time.time()
    unsigned = jwt.encode({"tenant_id": b, "exp": now + 60}, key=None, algorithm="none")  # type: ignore[arg-type]
    bad = {
        "missing": None,
        "empty": "",
        "garbage": "not.a.jwt",
        "expired": token(b, now=now - 7200, ttl_seconds=60),
        "tampered payload (a's signature, b's id)": _tampered(token(a), tenant_id=b),
        "tampered role": _tampered(token(a), role="admin"),
        "wrong key": jwt.encode({"tenant_id": b, "exp": now + 60}, "another-secret" * 4),
        "alg none": unsigned,
        "no exp": jwt.encode({"tenant_id": b}, SECRET),
        "boolean tenant": jwt.encode({"tenant_id": True, "exp": now + 60}, SECRET),
        "admin with a tenant": jwt.encode(
            {"role": "admin", "tenant_id": b, "exp": now + 60}, SECRET
        ),
    }
    for name, tok in bad.items():
        for route in (path, "/api/me", "/api/version", "/api/admin/overview",
                      f"/api/tenants/{b}/export/pnl?format=csv"):  # fmt: skip
            response = get(dashboard, route, tok)
            assert response.status_code == 401, (name, route, response.text)
            assert_refused(response, 401)
    # A token in another scheme, or in the query string, is not a credential.
    response = httpx.get(dashboard.url + path, headers={"Authorization": f"Basic {token(b)}"})
    assert_refused(response, 401)
    assert_refused(httpx.get(dashboard.url + path, params={"token": token(b)}), 401)


def test_another_tenants_id_anywhere_is_refused(dashboard: Dashboard) -> None:
    a, b = dashboard.a, dashboard.b
    tok = token(a)
    probes = [
        ("path", f"/api/tenants/{b}/reports/pnl", {}),
        ("path, export", f"/api/tenants/{b}/export/pnl", {"format": "csv"}),
        ("query", f"/api/tenants/{a}/reports/pnl", {"tenant_id": b}),
        ("query alias", f"/api/tenants/{a}/reports/pnl", {"tenant": b}),
        ("query repeated", f"/api/tenants/{a}/reports/pnl", [("tenant_id", a), ("tenant_id", b)]),
        ("query on me", "/api/me", {"tenant_id": b}),
        ("query, export", f"/api/tenants/{a}/export/pnl", {"format": "csv", "tenant_id": b}),
        ("not an id", f"/api/tenants/{a}x/reports/pnl", {}),
        ("overview", "/api/admin/overview", {}),
    ]
    for name, path, params in probes:
        response = get(dashboard, path, tok, params=params)
        assert response.status_code == 403, (name, response.text)
        assert_refused(response, 403)
    # A body naming another tenant.
    for body in ({"tenant_id": b}, {"tenant_id": str(b)}, {"tenantId": b, "format": "parquet"}):
        response = httpx.post(
            f"{dashboard.url}/api/tenants/{a}/export/pnl",
            headers={"Authorization": f"Bearer {tok}"}, json=body,
        )  # fmt: skip
        assert_refused(response, 403)
    # Token swap: b's own token reads b, and only b.
    assert get(dashboard, f"/api/tenants/{b}/reports/pnl", token(b)).status_code == 200
    assert_refused(get(dashboard, f"/api/tenants/{a}/reports/pnl", token(b)), 403)
    me = get(dashboard, "/api/me", tok).json()
    assert [t["tenant_id"] for t in me["tenants"]] == [a]


def test_admin_reads_any_tenant_and_the_overview(dashboard: Dashboard) -> None:
    admin = token(None)
    a, b = dashboard.a, dashboard.b
    for tenant in (a, b):
        mine = get(dashboard, f"/api/tenants/{tenant}/reports/pnl", token(tenant)).json()
        theirs = get(dashboard, f"/api/tenants/{tenant}/reports/pnl", admin).json()
        assert theirs["rows"] == mine["rows"]
    overview = get(dashboard, "/api/admin/overview", admin).json()
    assert {a, b} <= {r["tenant_id"] for r in overview["rows"]}
    me = get(dashboard, "/api/me", admin).json()
    assert {t["tenant_id"] for t in me["tenants"]} == set(dashboard.tenants)
    assert_refused(get(dashboard, "/api/tenants/999999/reports/pnl", admin), 404)
    assert_refused(get(dashboard, f"/api/tenants/{a}/reports/pnl", admin,
                       params={"tenant_id": b}), 403)  # fmt: skip


# ------------------------------------------------------------------ export


def test_export_csv_and_parquet_equal_the_marts(dashboard: Dashboard) -> None:
    a = dashboard.a
    for report in ("pnl", "disputes_cohort", "bank_cash_flow"):
        spec = REPORTS[report]
        view = get(dashboard, f"/api/tenants/{a}/reports/{report}", token(a)).json()
        start, end = view["period"]["start"], view["period"]["end"]
        expected = dashboard.report_rows(
            report, a, date.fromisoformat(start), date.fromisoformat(end)
        ).select(["tenant_id", *(c.name for c in spec.columns)])
        params = {"start": start, "end": end}
        pq_resp = get(dashboard, f"/api/tenants/{a}/export/{report}", token(a),
                      params={**params, "format": "parquet"})  # fmt: skip
        assert pq_resp.status_code == 200, pq_resp.text
        table = pq.read_table(io.BytesIO(pq_resp.content))
        assert table.select(expected.column_names).equals(expected)
        provenance = json.loads(table.schema.metadata[b"ledger_export"])
        assert provenance["source_lsn"] == dashboard.source_lsn
        assert provenance["reconciliation_status"] == "mismatch"
        assert provenance["tenant_id"] == a
        assert pq_resp.headers["x-ledger-source-lsn"] == dashboard.source_lsn
        assert pq_resp.headers["x-ledger-reconciliation"] == "mismatch"
        # CSV: the same rows, after '#' provenance lines; POST with a JSON body works too.
        csv_resp = httpx.post(
            f"{dashboard.url}/api/tenants/{a}/export/{report}",
            headers={"Authorization": f"Bearer {token(a)}"},
            json={**params, "format": "csv", "tenant_id": a},
        )  # fmt: skip
        assert csv_resp.status_code == 200, csv_resp.text
        lines = csv_resp.text.splitlines()
        meta = dict(line[2:].split(": ", 1) for line in lines if line.startswith("# "))
        assert meta["source_lsn"] == dashboard.source_lsn
        assert meta["reconciliation_status"] == "mismatch"
        rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
        assert len(rows) == expected.num_rows
        for col in spec.columns:
            if col.kind in ("money", "count"):
                got = [int(r[col.name]) for r in rows]
                assert got == expected.column(col.name).to_pylist(), (report, col.name)


# ------------------------------------------------------------------ freshness and cache


def test_version_polling_sees_a_new_snapshot(dashboard: Dashboard) -> None:
    a = dashboard.a
    tok = token(a)
    first = get(dashboard, "/api/version", tok)
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert get(dashboard, "/api/version", tok, headers={"If-None-Match": etag}).status_code == 304
    before = get(dashboard, f"/api/tenants/{a}/reports/pnl", tok).json()
    time.sleep(0.01)  # snapshot stamps have microseconds; make sure the new one differs
    stamp = dashboard.republish()
    after_version = get(dashboard, "/api/version", tok, headers={"If-None-Match": etag})
    assert after_version.status_code == 200
    assert after_version.json()["version"] == stamp != first.json()["version"]
    after = get(dashboard, f"/api/tenants/{a}/reports/pnl", tok).json()
    assert after["meta"]["snapshot"] == after_version.json()["version"]
    assert after["rows"] == before["rows"]


def test_the_cache_is_an_lru_that_counts_hits_and_misses() -> None:
    cache = ResultCache(max_bytes=3 * 256)  # three small entries
    calls: list[str] = []

    def compute(value: str) -> Any:
        calls.append(value)
        return value

    assert cache.get_or_compute(("k", "t1"), lambda: compute("one")) == "one"
    assert cache.get_or_compute(("k", "t1"), lambda: compute("again")) == "one"
    assert cache.get_or_compute(("k", "t2"), lambda: compute("two")) == "two"
    assert calls == ["one", "two"]
    assert (cache.hits, cache.misses) == (1, 2)
    assert cache.computed[("k", "t1")] == 1
    # Without a compute (the event loop's reader): a hit answers, a miss raises, uncounted.
    assert cache.get_or_compute(("k", "t2"), None) == "two"
    with pytest.raises(WouldBlock):
        cache.get_or_compute(("k", "t3"), None)
    assert (cache.hits, cache.misses) == (2, 2)
    # Precomputed entries are stored, not counted as misses.
    cache.put(("k", "t4"), "four")
    assert cache.get_or_compute(("k", "t4"), None) == "four"
    assert cache.misses == 2
    for i in range(5):
        cache.get_or_compute(i, lambda: compute("x"))
    assert len(cache) == 3
    assert ("k", "t1") not in cache


def test_a_new_snapshot_invalidates_only_the_periods_covering_the_touched_day(
    dashboard: Dashboard,
) -> None:
    a, tok = dashboard.a, token(dashboard.a)
    cache = dashboard.app.state.reader.cache
    pnl = ("report", "pnl")
    path = f"/api/tenants/{a}/reports/pnl"
    first = get(dashboard, path, tok).json()
    end = date.fromisoformat(first["period"]["end"])
    touched = end - timedelta(days=30)
    covering = {"start": (end - timedelta(days=40)).isoformat(), "end": end.isoformat()}
    elsewhere = {"start": (end - timedelta(days=7)).isoformat(), "end": end.isoformat()}
    before = {}
    for name, period in (("covering", covering), ("elsewhere", elsewhere)):
        before[name] = get(dashboard, path, tok, params=period)
        assert before[name].status_code == 200
    # Warm: asking again computes nothing, and a revalidation is a 304.
    misses = cache.computed[pnl]
    again = get(dashboard, path, tok, params=elsewhere,
                headers={"If-None-Match": before["elsewhere"].headers["etag"]})  # fmt: skip
    assert again.status_code == 304
    assert (
        get(dashboard, path, tok, params=covering).json()["rows"]
        == before["covering"].json()["rows"]
    )
    assert cache.computed[pnl] == misses
    try:
        stamp = dashboard.publish_with_one_day_changed(a, touched, bump=12345)
        # The period that does not cover the touched day: served from the cache, same ETag.
        hits = cache.hits
        kept = get(dashboard, path, tok, params=elsewhere)
        assert kept.json()["meta"]["snapshot"] == stamp
        assert kept.headers["etag"] == before["elsewhere"].headers["etag"]
        assert kept.json()["rows"] == before["elsewhere"].json()["rows"]
        assert cache.computed[pnl] == misses
        assert cache.hits > hits
        revalidated = get(dashboard, path, tok, params=elsewhere,
                          headers={"If-None-Match": kept.headers["etag"]})  # fmt: skip
        assert revalidated.status_code == 304
        # The period covering it: recomputed once, with the new number, and a new ETag.
        moved = get(dashboard, path, tok, params=covering)
        assert cache.computed[pnl] == misses + 1
        assert moved.headers["etag"] != before["covering"].headers["etag"]
        cols = moved.json()["columns"]

        def revenue(response: httpx.Response) -> int:
            (row,) = [r for r in response.json()["rows"] if r[0] == touched.isoformat()]
            return int(row[cols.index("revenue")])

        assert revenue(moved) == revenue(before["covering"]) + 12345
        assert moved.json()["meta"]["data_lsn"] is not None
    finally:
        dashboard.republish()


def test_cached_answers_come_from_the_event_loop(dashboard: Dashboard) -> None:
    a, tok = dashboard.a, token(dashboard.a)
    answered = dashboard.app.state.answered
    path = f"/api/tenants/{a}/reports/pnl"
    end = date.fromisoformat(get(dashboard, path, tok).json()["period"]["end"])
    in_thread, on_loop = answered["in_thread"], answered["on_loop"]
    for route in (path, path, "/api/version", "/api/me"):
        assert get(dashboard, route, tok).status_code == 200
    assert (answered["in_thread"], answered["on_loop"]) == (in_thread, on_loop + 4)
    # A period nobody asked for needs a query: a worker thread answers, then the loop does.
    fresh = {"start": (end - timedelta(days=12)).isoformat(), "end": end.isoformat()}
    first = get(dashboard, path, tok, params=fresh)
    assert answered["in_thread"] == in_thread + 1
    assert get(dashboard, path, tok, params=fresh).json()["rows"] == first.json()["rows"]
    assert (answered["in_thread"], answered["on_loop"]) == (in_thread + 1, on_loop + 5)


def test_a_remembered_token_still_expires(dashboard: Dashboard) -> None:
    a = dashboard.a
    tok = token(a, ttl_seconds=2)
    path = f"/api/tenants/{a}/reports/pnl"
    assert get(dashboard, path, tok).status_code == 200
    assert get(dashboard, path, tok).status_code == 200  # now remembered
    expires = jwt.decode(tok, options={"verify_signature": False})["exp"]
    time.sleep(max(0.0, expires - time.time()) + 0.1)
    assert_refused(get(dashboard, path, tok), 401)


def test_monthly_revenue_reconciliation_covers_its_whole_months(dashboard: Dashboard) -> None:
    """The monthly view's period bounds month starts; its reconciliation state and the days it
    shows are those of the whole months (a mismatch after the last month's first day counts)."""
    a = dashboard.a
    body = get(dashboard, f"/api/tenants/{a}/reports/monthly_revenue", token(a)).json()
    last_month = date.fromisoformat(body["period"]["end"])
    covers = {k: date.fromisoformat(v) for k, v in body["covers"].items()}
    assert last_month.day == 1
    assert covers["start"].day == 1
    assert covers["start"] >= date.fromisoformat(body["period"]["start"])
    assert covers["end"].month == last_month.month
    assert (covers["end"] + timedelta(days=1)).day == 1
    assert last_month < dashboard.mismatch_day <= covers["end"]
    assert body["reconciliation"]["status"] == "mismatch"
    assert body["reconciliation"]["days_mismatch"] == 1


def test_a_new_snapshots_default_views_are_computed_before_it_is_served(
    dashboard: Dashboard,
) -> None:
    """The first requests after a new snapshot (here: a late change to tenant a's newest day,
    which every default period covers) run no query: the watcher computed them before serving."""
    a, tok = dashboard.a, token(dashboard.a)
    pnl = [r for r in dashboard.mart("daily_pnl").to_pylist() if r["tenant_id"] == a]
    newest = max(r["local_date"] for r in pnl)
    cache = dashboard.app.state.reader.cache

    def queries() -> dict[Any, int]:  # results computed on request (rendered bodies aside)
        return {kind: n for kind, n in cache.computed.items() if kind[0] != "body"}

    try:
        dashboard.publish_with_one_day_changed(a, newest, bump=1)
        before = queries()
        for name in REPORTS:
            assert get(dashboard, f"/api/tenants/{a}/reports/{name}", tok).status_code == 200
        assert queries() == before
        assert dashboard.app.state.snapshots.current().warmed["reports_warmed"] == len(REPORTS)
    finally:
        dashboard.republish()


# ------------------------------------------------------------------ process start


def _started(dashboard: Dashboard, root: Path) -> DashboardConfig:
    return DashboardConfig(export_root=root, secret=SECRET, watch_seconds=0.05,
                           tenant_loader=lambda: dict(dashboard.tenants))  # fmt: skip


def test_at_process_start_the_snapshot_is_prepared_before_the_server_accepts_connections(
    dashboard: Dashboard,
) -> None:
    """A new dashboard process over a published snapshot: once its socket answers, it is ready
    and its first requests (every view's default period, what the page asks for) run no query."""
    app = build_dashboard(_started(dashboard, dashboard.root))
    cache = app.state.reader.cache
    with serve(app) as url:
        ready = httpx.get(f"{url}/readyz", timeout=30)
        assert ready.status_code == 200, ready.text
        assert ready.json()["prepared"]["reports_warmed"] == len(REPORTS)
        computed_at_start, misses_at_start = dict(cache.computed), cache.misses
        a, auth = dashboard.a, {"Authorization": f"Bearer {token(dashboard.a)}"}
        for name in REPORTS:
            response = httpx.get(f"{url}/api/tenants/{a}/reports/{name}", headers=auth, timeout=30)
            assert response.status_code == 200, (name, response.text)
    # Only the rendered bodies were made on request; no result was computed.
    assert {k: n for k, n in cache.computed.items() if k[0] != "body"} == {
        k: n for k, n in computed_at_start.items() if k[0] != "body"
    }
    assert cache.misses == misses_at_start + len(REPORTS)


def test_with_nothing_published_the_server_starts_unready_and_serves_the_first_snapshot(
    dashboard: Dashboard, tmp_path: Path
) -> None:
    a, tok = dashboard.a, token(dashboard.a)
    app = build_dashboard(_started(dashboard, tmp_path))
    with serve(app) as url:
        assert httpx.get(f"{url}/readyz", timeout=30).status_code == 503
        view = f"{url}/api/tenants/{a}/reports/pnl"
        auth = {"Authorization": f"Bearer {tok}"}
        assert_refused(httpx.get(view, headers=auth, timeout=30), 503)
        # Publish: the snapshot folder first, then CURRENT, as the exporter does.
        current = dashboard.snapshot_dir()
        shutil.copytree(current, tmp_path / SNAPSHOTS / current.name)
        shutil.copy(dashboard.root / POINTER, tmp_path / POINTER)
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/readyz", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "the published snapshot was never served"
            time.sleep(0.05)
        response = httpx.get(view, headers=auth, timeout=30)
        assert response.status_code == 200
        assert response.json()["meta"]["snapshot"] == current.name


def test_source_tag_keys_digest_only_the_days_asked_for(tmp_path: Path) -> None:
    day = date(2025, 3, 1)

    def tags(name: str, rows: list[tuple[int, int, int]]) -> SourceTags:
        table = pa.table({
            "tenant_id": pa.array([t for t, _, _ in rows], pa.int32()),
            "local_date": pa.array([day + timedelta(days=d) for _, d, _ in rows], pa.date32()),
            "source_lsn": pa.array([lsn for _, _, lsn in rows], pa.int64()),
        })  # fmt: skip
        pq.write_table(table, tmp_path / name)
        return SourceTags.read(tmp_path / name)

    # Unsorted on disk; tenant 2's day 1 moved in the second snapshot.
    old = tags("old.parquet", [(2, 1, 50), (1, 0, 10), (2, 0, 40), (1, 1, 20), (1, 2, 30)])
    new = tags("new.parquet", [(2, 1, 51), (1, 0, 10), (2, 0, 40), (1, 1, 20), (1, 2, 30)])
    d0, d1, d2 = (day + timedelta(days=i) for i in range(3))
    assert old.key([1], None, None) == new.key([1], None, None)
    assert old.key([2], d0, d0) == new.key([2], d0, d0)
    assert old.key([2], d0, d1) != new.key([2], d0, d1)
    assert old.key([2], None, d1) != new.key([2], None, d1)
    assert old.key([1, 2], d0, d0) != old.key([1], d0, d0)
    assert old.latest([1], d0, d1) == 20
    assert old.latest([1, 2], None, None) == 50
    assert new.latest([2], d1, d2) == 51
    assert old.latest([1], d2 + timedelta(days=1), None) is None
    assert old.latest([3], None, None) is None
    assert old.key([3], None, None) == new.key([3], None, None)
