"""The dashboard's ASGI app (Starlette): a static page and a small JSON API over the marts.

Endpoints (all under ``/api`` need ``Authorization: Bearer <token>``; see :mod:`.auth`):

* ``GET /`` — the page (no data in it; it reads the token from the URL fragment, keeps it in
  ``sessionStorage`` and calls the API).
* ``GET /healthz`` — liveness; ``GET /readyz`` — readiness: 200 once a marts snapshot is served
  (opened, loaded into memory, default views computed), else 503.
* ``GET /api/version`` — the published marts snapshot (version, source LSN, time), with an
  ``ETag``: the page polls it every few seconds and reloads its views when it changes.
* ``GET /api/me`` — who the token is and which tenants it may read.
* ``GET /api/tenants/{tenant_id}/reports/{report}?start=&end=`` — one view: rows, totals per
  currency, the snapshot's source position and time, the latest source position behind the
  view's own days, the period's reconciliation state. Its ``ETag`` digests what the numbers
  depend on (the source tags of the view's days and the reconciliation state), not the snapshot:
  after a snapshot that touched other days the browser's revalidation gets a 304.
* ``GET|POST /api/tenants/{tenant_id}/export/{report}?format=csv|parquet&start=&end=`` — the
  audit export (POST takes the same fields as a JSON body).
* ``GET /api/admin/overview`` — every tenant's last 30 days and reconciliation (admin only).

Freshness is by polling, not a push channel: a snapshot is published at most once per marts
run (minutes apart), the poll is a ``stat`` answered with 304 when nothing changed, it needs no
per-client connection or reconnect logic on the server, and it passes every proxy. A 5 s poll
shows a late dispute within seconds of its snapshot, well inside the marts run's own latency.

Every data endpoint calls :func:`.auth.tenant_scope` with every tenant id the client sent (path,
query string, body) before it reads anything; the queries only accept its result.

Where requests run: on the event loop first, with a reader that only looks results up (a
verified token, the served snapshot and cached results are all in memory). Anything that needs a
query or file I/O raises :class:`WouldBlock`, and the request is run again in a worker thread,
at most ``query_threads`` at a time. On a small machine a thread hop costs more than a cached
answer, and dozens of threads contending with the loop for the GIL collapse throughput; the
queries themselves use DuckDB's own threads. The snapshot published at start is opened and its
default views computed before the server accepts connections; each newer one by a watcher thread
before it is served (see :class:`.snapshot.SnapshotSource`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pyarrow as pa
import pyarrow.parquet as pq
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ledger_assets.dashboard.auth import (
    AuthError,
    Claims,
    ForbiddenError,
    TenantScope,
    UnknownTenantError,
    VerifiedTokens,
    check_secret,
    tenant_scope,
)
from ledger_assets.dashboard.queries import (
    MARTS,
    MAX_PERIOD_DAYS,
    REPORTS,
    MartReader,
    Period,
    Report,
    local_time,
)
from ledger_assets.dashboard.snapshot import (
    NoSnapshotError,
    Snapshot,
    SnapshotSource,
    WouldBlock,
)
from ledger_assets.dashboard.tenants import Tenant, postgres_tenants
from ledger_assets.lib.cdc.lsn import Lsn
from ledger_assets.lib.logs import get_logger
from ledger_assets.lib.money import CURRENCY_EXPONENTS

log = get_logger(__name__)

STATIC = Path(__file__).with_name("static")
#: Client-side names a tenant id may arrive under; all of them go to tenant_scope.
TENANT_PARAMS = ("tenant_id", "tenant", "tenantId")


@dataclass(frozen=True)
class DashboardConfig:
    #: The marts export root (``<state dir>/marts``: ``CURRENT`` and ``snapshots/``).
    export_root: Path
    secret: str
    #: The system of record, for the tenant directory only.
    dsn: str | None = None
    poll_seconds: float = 5.0
    #: Overrides the tenant directory's loader (tests, or a deployment without a DSN).
    tenant_loader: Callable[[], dict[int, Tenant]] | None = None
    #: How often the watcher looks for a newly published snapshot (one ``stat``).
    watch_seconds: float = 0.5
    #: At most this long computing every tenant's default views before serving a new snapshot.
    warm_seconds: float = 10.0
    #: Worker threads for requests that need a query (cache misses, exports).
    query_threads: int = 3


class BadRequestError(Exception):
    pass


class NotFoundError(Exception):
    pass


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _requested_tenants(request: Request, body: Mapping[str, Any] | None) -> list[object]:
    """Every tenant id the client named anywhere: path, query string (repeated too), body."""
    named: list[object] = []
    if "tenant_id" in request.path_params:
        named.append(request.path_params["tenant_id"])
    for param in TENANT_PARAMS:
        named.extend(request.query_params.getlist(param))
        if body is not None and param in body:
            named.append(body[param])
    return named


def _date(value: str | None, name: str) -> date | None:
    if value is None or value == "":
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise BadRequestError(f"{name} must be an ISO date (YYYY-MM-DD)") from exc


def _json_value(value: Any, zone: str) -> Any:
    if isinstance(value, datetime):
        return local_time(value, zone)
    if isinstance(value, date):
        return value.isoformat()
    return value


def _totals(report: Report, table: pa.Table) -> list[dict[str, Any]]:
    """Per currency: sums of money and count columns; first/last for balances."""
    currencies = table.column("currency").to_pylist() if report.has_currency else []
    out: list[dict[str, Any]] = []
    for currency in sorted(set(currencies)):
        idx = [i for i, c in enumerate(currencies) if c == currency]
        values: dict[str, int] = {}
        for col in report.columns:
            if col.total is None:
                continue
            data = table.column(col.name).to_pylist()
            picked = [data[i] for i in idx if data[i] is not None]
            if not picked:
                values[col.name] = 0
            elif col.total == "sum":
                values[col.name] = int(sum(picked))
            elif col.total == "first":
                values[col.name] = int(picked[0])
            else:
                values[col.name] = int(picked[-1])
        out.append({"currency": currency, "rows": len(idx), "values": values})
    return out


def build_dashboard(config: DashboardConfig) -> Starlette:
    tokens = VerifiedTokens(check_secret(config.secret))
    reader = MartReader()
    loader = config.tenant_loader
    if loader is None:
        if config.dsn is None:
            raise ValueError("the dashboard needs a DSN or a tenant loader for the directory")
        loader = postgres_tenants(config.dsn)

    def warm(snapshot: Snapshot) -> None:
        snapshot.warmed.update(reader.warm(snapshot, config.warm_seconds))

    snapshots = SnapshotSource(config.export_root, loader, MARTS, warm)
    limiter = anyio.CapacityLimiter(config.query_threads)
    page = (
        (STATIC / "index.html")
        .read_text()
        .replace("__POLL_MS__", str(int(config.poll_seconds * 1000)))
    )
    script = (STATIC / "app.js").read_text()

    def authenticate(request: Request) -> Claims:
        return tokens.verify(_bearer(request))

    def scoped(
        request: Request, reader: MartReader, body: Mapping[str, Any] | None = None
    ) -> tuple[Claims, Snapshot, Mapping[int, Tenant], TenantScope]:
        """Authenticate, resolve the snapshot, then THE scope decision (auth.tenant_scope)."""
        claims = authenticate(request)
        snapshot = snapshots.current()
        tenants = snapshot.tenants
        scope = tenant_scope(claims, _requested_tenants(request, body), tenants.keys())
        return claims, snapshot, tenants, scope

    def period_for(
        reader: MartReader,
        report: Report,
        snapshot: Snapshot,
        scope: TenantScope,
        start: str | None,
        end: str | None,
    ) -> Period:
        start_day, end_day = _date(start, "start"), _date(end, "end")
        if end_day is None:
            end_day = reader.default_period(snapshot, report, scope).end
        start_day = start_day or end_day - timedelta(days=report.default_days - 1)
        if start_day > end_day:
            raise BadRequestError("start is after end")
        if (end_day - start_day).days > MAX_PERIOD_DAYS:
            raise BadRequestError(f"a period is at most {MAX_PERIOD_DAYS} days")
        return Period(start_day, end_day)

    def meta(snapshot: Snapshot, zone: str) -> dict[str, Any]:
        return {
            "snapshot": snapshot.version,
            "source_lsn": snapshot.source_lsn,
            "published_at": snapshot.published_at.isoformat(),
            "published_at_local": local_time(snapshot.published_at, zone),
        }

    def report_of(name: str) -> Report:
        if name not in REPORTS:
            raise NotFoundError(f"no report {name!r}")
        return REPORTS[name]

    # -- handlers (see the module's docs for where they run) -----------------------------

    def version(request: Request, reader: MartReader) -> Response:
        authenticate(request)
        snapshot = snapshots.current()
        etag = f'"{snapshot.version}"'
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return JSONResponse(
            {
                "version": snapshot.version,
                "source_lsn": snapshot.source_lsn,
                "published_at": snapshot.published_at.isoformat(),
            },
            headers=headers,
        )

    def me(request: Request, reader: MartReader) -> Response:
        claims, _, tenants, scope = scoped(request, reader)
        visible = [tenants[t] for t in scope.tenant_ids if t in tenants]
        return JSONResponse(
            {
                "role": claims.role,
                "tenant_id": claims.tenant_id,
                "expires_at": claims.expires_at,
                "poll_seconds": config.poll_seconds,
                "tenants": [
                    {"tenant_id": t.tenant_id, "name": t.name, "time_zone": t.time_zone,
                     "currency": t.default_currency}
                    for t in visible
                ],
                "reports": [
                    {"name": r.name, "title": r.title, "date_column": r.date_column,
                     "default_days": r.default_days,
                     "columns": [{"name": c.name, "label": c.label, "kind": c.kind,
                                  "total": c.total} for c in r.columns],
                     "chart": None if r.chart is None
                     else {"kind": r.chart.kind, "series": list(r.chart.series)}}
                    for r in REPORTS.values()
                ],
            }
        )  # fmt: skip

    def view(request: Request, reader: MartReader) -> Response:
        _, snapshot, tenants, scope = scoped(request, reader)
        report = report_of(request.path_params["report"])
        tenant = tenants.get(scope.single)
        if tenant is None:
            raise NotFoundError("unknown tenant")
        period = period_for(
            reader, report, snapshot, scope,
            request.query_params.get("start"), request.query_params.get("end"),
        )  # fmt: skip
        covered = report.covered(period)
        recon = reader.reconciliation_summary(snapshot, scope, covered)
        etag = '"{}"'.format(
            hashlib.blake2b(
                json.dumps(
                    [report.name, scope.tenant_ids, period.key,
                     reader.data_key(snapshot, report, scope, period), recon]
                ).encode(),
                digest_size=16,
            ).hexdigest()
        )  # fmt: skip
        # private: the response is one tenant's; no-cache: revalidate every time (the ETag).
        cache_headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=cache_headers)

        def render() -> tuple[bytes, str | None]:
            """Everything but the snapshot's own metadata, serialized: a function of the ETag
            (and the tenant's name and zone), so it is cached under it across snapshots."""
            table = reader.report(snapshot, report, scope, period)
            names = [c.name for c in report.columns]
            columns = [table.column(n).to_pylist() for n in names]
            rows = [
                [_json_value(v, tenant.time_zone) for v in row]
                for row in zip(*columns, strict=True)
            ]
            currencies = set(table.column("currency").to_pylist()) if report.has_currency else set()
            tags = snapshot.tags
            behind = (
                None if tags is None or report.depends == "snapshot"
                else tags.latest(scope.tenant_ids, *report.source_days(period))
            )  # fmt: skip
            shown = {
                **recon,
                "last_checked_at_local": local_time(
                    datetime.fromisoformat(recon["last_checked_at"])
                    if recon["last_checked_at"] else None,
                    tenant.time_zone,
                ),
            }  # fmt: skip
            body = {
                "report": report.name,
                "title": report.title,
                "tenant": {"tenant_id": tenant.tenant_id, "name": tenant.name,
                           "time_zone": tenant.time_zone},
                "period": {"start": period.start.isoformat(), "end": period.end.isoformat()},
                "covers": {"start": covered.start.isoformat(), "end": covered.end.isoformat()},
                "columns": names,
                "rows": rows,
                "totals": _totals(report, table),
                "exponents": {c: CURRENCY_EXPONENTS.get(c, 2) for c in currencies},
                "reconciliation": shown,
            }  # fmt: skip
            return _json(body), None if behind is None else str(Lsn(behind))

        fragment, data_lsn = reader.cached(("body", tenant, etag), render)
        head = _json({"meta": {**meta(snapshot, tenant.time_zone), "data_lsn": data_lsn}})
        # Two JSON objects joined into one: {"meta": ...} and the cached {"report": ...}.
        return Response(
            head[:-1] + b"," + fragment[1:],
            media_type="application/json",
            headers={**cache_headers, "X-Ledger-Snapshot": snapshot.version},
        )

    def export(request: Request, reader: MartReader, body: Mapping[str, Any] | None) -> Response:
        _, snapshot, tenants, scope = scoped(request, reader, body)
        fields: dict[str, Any] = dict(request.query_params)
        if body:
            fields.update({k: v for k, v in body.items() if isinstance(v, str)})
        report = report_of(request.path_params["report"])
        fmt = fields.get("format", "csv")
        if fmt not in ("csv", "parquet"):
            raise BadRequestError("format is csv or parquet")
        tenant = tenants.get(scope.single)
        if tenant is None:
            raise NotFoundError("unknown tenant")
        period = period_for(reader, report, snapshot, scope, fields.get("start"), fields.get("end"))
        table = reader.report(snapshot, report, scope, period)
        recon = reader.reconciliation_summary(snapshot, scope, report.covered(period))
        provenance = {
            "report": report.name,
            "mart": report.mart,
            "tenant_id": tenant.tenant_id,
            "time_zone": tenant.time_zone,
            "period_start": period.start.isoformat(),
            "period_end": period.end.isoformat(),
            "snapshot": snapshot.version,
            "source_lsn": snapshot.source_lsn,
            "published_at": snapshot.published_at.isoformat(),
            "reconciliation_status": recon["status"],
            "reconciliation_last_checked_at": recon["last_checked_at"],
            "reconciliation_watermark_lsn": recon["watermark_lsn"],
            "rows": table.num_rows,
            "money": "integer minor units of the row's currency",
        }
        filename = (
            f"{report.name}_tenant{tenant.tenant_id}_{period.start}_{period.end}_"
            f"{snapshot.version}.{fmt}"
        )
        headers = {
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Ledger-Snapshot": snapshot.version,
            "X-Ledger-Source-LSN": snapshot.source_lsn or "",
            "X-Ledger-Reconciliation": recon["status"],
            "X-Ledger-Reconciliation-Checked-At": recon["last_checked_at"] or "",
            "Cache-Control": "no-store",
        }
        if fmt == "parquet":
            with_meta = table.replace_schema_metadata(
                {**(table.schema.metadata or {}), b"ledger_export": json.dumps(provenance)}
            )
            sink = io.BytesIO()
            pq.write_table(with_meta, sink, compression="zstd")
            return Response(sink.getvalue(), media_type="application/vnd.apache.parquet",
                            headers=headers)  # fmt: skip
        text = io.StringIO()
        for key, value in provenance.items():
            text.write(f"# {key}: {'' if value is None else value}\n")
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(table.column_names)
        columns = [table.column(n).to_pylist() for n in table.column_names]
        for row in zip(*columns, strict=True):
            writer.writerow(
                ["" if v is None else v.isoformat() if isinstance(v, date) else v for v in row]
            )
        return Response(text.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)

    def overview(request: Request, reader: MartReader) -> Response:
        claims, snapshot, tenants, scope = scoped(request, reader)
        if claims.role != "admin":
            raise ForbiddenError("the cross-tenant overview is for administrators")
        table = reader.overview(snapshot, scope)
        rows = []
        for row in table.to_pylist():
            tenant = tenants.get(int(row["tenant_id"]))
            zone = tenant.time_zone if tenant else "UTC"
            rows.append({
                **{k: _json_value(v, zone) for k, v in row.items()},
                "name": tenant.name if tenant else None,
                "exponent": CURRENCY_EXPONENTS.get(str(row["currency"]), 2),
            })  # fmt: skip
        return JSONResponse({"rows": rows, "meta": meta(snapshot, "UTC")})

    # -- ASGI glue -----------------------------------------------------------------------

    loop_reader = reader.on_loop()
    answered: Counter[str] = Counter()

    async def answer(handler: Callable[[MartReader], Response]) -> Response:
        """On the loop if everything is cached; else in a worker thread (see the module)."""
        try:
            response = _answer(lambda: handler(loop_reader))
            answered["on_loop"] += 1
            return response
        except WouldBlock:
            answered["in_thread"] += 1
            return await anyio.to_thread.run_sync(_answer, lambda: handler(reader), limiter=limiter)

    def guarded(handler: Callable[[Request, MartReader], Response]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            return await answer(lambda using: handler(request, using))

        return endpoint

    async def export_endpoint(request: Request) -> Response:
        body: Mapping[str, Any] | None = None
        if request.method == "POST":
            raw = await request.body()
            try:
                parsed = json.loads(raw or b"{}")
            except ValueError:
                return JSONResponse({"error": "body is not JSON"}, status_code=400)
            if not isinstance(parsed, dict):
                return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
            body = parsed
        # Always in a thread: an export writes a whole file, even from a cached result.
        answered["in_thread"] += 1
        return await anyio.to_thread.run_sync(
            _answer, lambda: export(request, reader, body), limiter=limiter
        )

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # Prepare the published snapshot before the server accepts connections (uvicorn binds
        # its socket once the lifespan has started), so no request pays for opening it: the
        # first requests at process start find the marts in memory and the default views
        # computed. With nothing published yet the server starts at once and is not ready.
        await anyio.to_thread.run_sync(snapshots.poll)
        stop = threading.Event()
        watcher = threading.Thread(
            target=snapshots.watch, args=(config.watch_seconds, stop),
            name="dashboard-snapshots", daemon=True,
        )  # fmt: skip
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            await anyio.to_thread.run_sync(watcher.join, 5.0)

    async def index(_: Request) -> Response:
        return HTMLResponse(page, headers=_PAGE_HEADERS)

    async def app_js(_: Request) -> Response:
        return Response(script, media_type="text/javascript", headers=_PAGE_HEADERS)

    async def health(_: Request) -> Response:
        return JSONResponse({"ok": True})

    async def ready(_: Request) -> Response:
        # Readiness, not liveness: a snapshot is served (opened, loaded and warmed). What that
        # took, for operators; no tenant data.
        served = snapshots.served
        if served is None:
            return JSONResponse({"ready": False}, status_code=503)
        return JSONResponse({"ready": True, "prepared": served.warmed})

    app = Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/app.js", app_js, methods=["GET"]),
            Route("/healthz", health, methods=["GET"]),
            Route("/readyz", ready, methods=["GET"]),
            Route("/api/version", guarded(version), methods=["GET"]),
            Route("/api/me", guarded(me), methods=["GET"]),
            Route("/api/admin/overview", guarded(overview), methods=["GET"]),
            Route("/api/tenants/{tenant_id}/reports/{report}", guarded(view), methods=["GET"]),
            Route("/api/tenants/{tenant_id}/export/{report}", export_endpoint,
                  methods=["GET", "POST"]),
        ],
        lifespan=lifespan,
    )  # fmt: skip
    # Operators, tests and the benchmark read the cache's counts and the served snapshot.
    app.state.reader = reader
    app.state.snapshots = snapshots
    app.state.answered = answered
    return app


_PAGE_HEADERS = {
    # The page loads nothing from elsewhere and may not be framed.
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _json(value: Any) -> bytes:
    """As Starlette's JSONResponse renders."""
    return json.dumps(
        value, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def _answer(produce: Callable[[], Response]) -> Response:
    """Run a handler, mapping refusals to statuses; a refusal never carries data."""
    try:
        return produce()
    except AuthError as exc:
        return JSONResponse(
            {"error": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )
    except ForbiddenError as exc:
        log.warning("dashboard request refused", reason=str(exc))
        return JSONResponse({"error": str(exc)}, status_code=403)
    except (UnknownTenantError, NotFoundError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)
    except BadRequestError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    except NoSnapshotError as exc:
        return JSONResponse({"error": str(exc)}, status_code=503)
