// Ledger dashboard: reads the token from the URL fragment (#token=...), keeps it in
// sessionStorage (never sent in a URL to the server), renders every report of one tenant as a
// chart plus a table with totals, and polls /api/version to reload when a snapshot is published.
"use strict";

const KEY = "ledger-dashboard-token";
const POLL_MS = Number(document.body.dataset.pollMs) || 5000;
const state = { me: null, version: null, etag: null, tenant: null };

(function takeToken() {
  const m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
})();

function token() { return sessionStorage.getItem(KEY) || ""; }

async function api(path, opts) {
  const headers = Object.assign({ Authorization: "Bearer " + token() }, (opts || {}).headers);
  const res = await fetch(path, Object.assign({}, opts, { headers }));
  if (res.status === 401 || res.status === 403) {
    const body = await res.json().catch(() => ({}));
    throw new Error("access refused (" + res.status + "): " + (body.error || ""));
  }
  return res;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

// Exact for integers below 2^53: no floating point on money.
function money(minor, exp) {
  if (minor === null || minor === undefined) return "";
  const neg = minor < 0;
  let s = String(Math.abs(minor));
  let frac = "";
  if (exp > 0) {
    s = s.padStart(exp + 1, "0");
    frac = "." + s.slice(-exp);
    s = s.slice(0, -exp);
  }
  return (neg ? "-" : "") + s.replace(/\B(?=(\d{3})+(?!\d))/g, ",") + frac;
}

function cell(kind, value, exp) {
  if (value === null || value === undefined) return "";
  if (kind === "money") return money(value, exp);
  if (kind === "rate") return (value * 100).toFixed(2) + "%";
  if (kind === "count") return money(value, 0);
  return String(value);
}

const NUMERIC = new Set(["money", "count", "rate"]);

function chart(spec, report, data) {
  // One series per column, summed per date, for the currency with the most rows.
  const curIdx = data.columns.indexOf("currency");
  const counts = {};
  for (const r of data.rows) counts[r[curIdx]] = (counts[r[curIdx]] || 0) + 1;
  const currency = Object.keys(counts).sort((a, b) => counts[b] - counts[a])[0];
  const dateIdx = data.columns.indexOf(report.date_column);
  const byDate = new Map();
  for (const r of data.rows) {
    if (r[curIdx] !== currency) continue;
    const d = r[dateIdx];
    const acc = byDate.get(d) || spec.series.map(() => 0);
    spec.series.forEach((s, i) => { acc[i] += r[data.columns.indexOf(s)] || 0; });
    byDate.set(d, acc);
  }
  const dates = [...byDate.keys()].sort();
  // T leaves a band above the plot for the legend, so no bar or line covers it.
  const W = 900, H = 170, L = 70, B = 20, T = 22, LEGEND_Y = 12;
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  if (!dates.length) return svg;
  const values = dates.flatMap((d) => byDate.get(d));
  const lo = Math.min(0, ...values), hi = Math.max(0, ...values);
  const span = hi - lo || 1;
  const x = (i) => L + (dates.length === 1 ? 0 : (i * (W - L - 10)) / (dates.length - 1));
  const y = (v) => T + ((hi - v) * (H - T - B)) / span;
  const exp = (data.exponents || {})[currency] || 0;
  const column = (s) => report.columns.find((c) => c.name === s);
  const isMoney = (s) => column(s).kind === "money";
  const add = (tag, attrs, text) => {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    svg.append(n);
  };
  const fmtAxis = (v) => (isMoney(spec.series[0]) ? money(Math.round(v), exp) : String(Math.round(v)));
  add("line", { x1: L, x2: W, y1: y(0), y2: y(0), stroke: "#999", "stroke-width": 1 });
  add("text", { x: 2, y: T + 10, "font-size": 11 }, fmtAxis(hi));
  add("text", { x: 2, y: H - B, "font-size": 11 }, fmtAxis(lo));
  add("text", { x: L, y: H - 4, "font-size": 11 }, dates[0]);
  add("text", { x: W - 80, y: H - 4, "font-size": 11 }, dates[dates.length - 1]);
  const colors = ["#2f6fdf", "#e07b20", "#2a9d5c"];
  spec.series.forEach((s, si) => {
    if (spec.kind === "bar") {
      // One slot per date inside the plot area; a bar fills most of its slot.
      const slot = (W - L - 10) / dates.length;
      const bw = Math.max(1, slot * 0.8);
      dates.forEach((d, i) => {
        const v = byDate.get(d)[si];
        add("rect", { x: L + i * slot + (slot - bw) / 2, y: Math.min(y(v), y(0)), width: bw,
                      height: Math.abs(y(v) - y(0)), fill: colors[si] });
      });
    } else {
      const pts = dates.map((d, i) => `${x(i).toFixed(1)},${y(byDate.get(d)[si]).toFixed(1)}`);
      add("polyline", { points: pts.join(" "), fill: "none", stroke: colors[si], "stroke-width": 2 });
    }
    add("text", { x: L + 10 + si * 160, y: LEGEND_Y, "font-size": 11, fill: colors[si] },
        isMoney(s) ? `${column(s).label} (${currency.toUpperCase()})` : column(s).label);
  });
  return svg;
}

function table(report, data) {
  const cols = report.columns;
  const head = el("tr", {}, ...cols.map((c) => el("th", { class: NUMERIC.has(c.kind) ? "" : "text" }, c.label)));
  const curIdx = data.columns.indexOf("currency");
  const body = el("tbody");
  for (const r of data.rows) {
    const exp = (data.exponents || {})[r[curIdx]] || 0;
    body.append(el("tr", {}, ...cols.map((c, i) =>
      el("td", { class: NUMERIC.has(c.kind) ? "" : "text" },
         c.name === "currency" ? String(r[i]).toUpperCase() : cell(c.kind, r[i], exp)))));
  }
  // Totals sit under the header (sticky with it), so they stay in view while the rows scroll.
  const foot = el("thead", {}, head);
  for (const t of data.totals) {
    const exp = (data.exponents || {})[t.currency] || 0;
    foot.append(el("tr", { class: "totals" }, ...cols.map((c, i) => {
      if (i === 0) return el("td", { class: "text" }, `Total (${t.rows} rows)`);
      if (c.name === "currency") return el("td", { class: "text" }, t.currency.toUpperCase());
      if (!(c.name in t.values)) return el("td", {}, "");
      return el("td", { "data-total": `${report.name}:${t.currency}:${c.name}` },
                cell(c.kind, t.values[c.name], exp));
    })));
  }
  return el("div", { class: "scroll" }, el("table", {}, foot, body));
}

async function download(report, fmt) {
  const q = new URLSearchParams({ format: fmt });
  if (document.getElementById("start").value) q.set("start", document.getElementById("start").value);
  if (document.getElementById("end").value) q.set("end", document.getElementById("end").value);
  const res = await api(`/api/tenants/${state.tenant}/export/${report}?${q}`);
  const blob = await res.blob();
  const name = /filename="([^"]+)"/.exec(res.headers.get("content-disposition") || "");
  const a = el("a", { href: URL.createObjectURL(blob), download: name ? name[1] : `${report}.${fmt}` });
  document.body.append(a);
  a.click();
  a.remove();
}

async function renderReport(report) {
  const q = new URLSearchParams();
  const s = document.getElementById("start").value, e = document.getElementById("end").value;
  if (s) q.set("start", s);
  if (e) q.set("end", e);
  const res = await api(`/api/tenants/${state.tenant}/reports/${report.name}?${q}`);
  const data = await res.json();
  if (!res.ok) return el("section", {}, el("h2", {}, report.title), el("p", { class: "error" }, data.error || res.status));
  const recon = data.reconciliation;
  const tools = el("span", { class: "tools" });
  for (const fmt of ["csv", "parquet"]) {
    const b = el("button", { type: "button", "data-export": `${report.name}:${fmt}` }, `Export ${fmt.toUpperCase()}`);
    b.addEventListener("click", () => download(report.name, fmt));
    tools.append(b);
  }
  const meta = el("div", { class: "meta", "data-meta": report.name },
    // The days the rows are about: a monthly view's whole months, not its month starts.
    `${data.covers.start} – ${data.covers.end} (${data.tenant.time_zone}) · source LSN `,
    el("code", { "data-lsn": report.name }, data.meta.source_lsn || "unknown"),
    ` · marts published ${data.meta.published_at_local} · snapshot ${data.meta.snapshot} · reconciliation `,
    el("span", { class: `recon-${recon.status}`, "data-recon": report.name }, recon.status),
    recon.last_checked_at_local ? ` (last check ${recon.last_checked_at_local})` : "");
  const section = el("section", { id: `report-${report.name}` }, tools, el("h2", {}, report.title), meta);
  if (report.chart && data.rows.length) section.append(chart(report.chart, report, data));
  section.append(table(report, data));
  return section;
}

async function renderOverview() {
  const res = await api("/api/admin/overview");
  const data = await res.json();
  const rows = data.rows.map((r) => el("tr", {},
    el("td", { class: "text" }, String(r.tenant_id)), el("td", { class: "text" }, r.name || ""),
    el("td", { class: "text" }, r.currency), el("td", {}, money(r.revenue, r.exponent)),
    el("td", {}, money(r.net, r.exponent)), el("td", {}, String(r.mismatched_days)),
    el("td", { class: "text" }, r.last_checked_at || "never")));
  const head = el("tr", {}, ...["Tenant", "Name", "Currency", "Revenue (30 d)", "Net (30 d)",
    "Mismatched days", "Last check"].map((h) => el("th", { class: "text" }, h)));
  return el("section", { id: "overview" }, el("h2", {}, "All tenants (administrator)"),
    el("div", { class: "scroll" }, el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows))));
}

async function renderAll() {
  const main = document.getElementById("main");
  const sections = [];
  if (state.me.role === "admin") sections.push(await renderOverview());
  for (const report of state.me.reports) sections.push(await renderReport(report));
  main.replaceChildren(...sections);
  document.body.dataset.rendered = state.version || "";
}

async function poll() {
  try {
    const headers = state.etag ? { "If-None-Match": state.etag } : {};
    const res = await api("/api/version", { headers });
    if (res.status === 200) {
      const v = await res.json();
      state.etag = res.headers.get("etag");
      const changed = state.version !== null && v.version !== state.version;
      state.version = v.version;
      document.getElementById("live").textContent =
        `live · snapshot ${v.version} · LSN ${v.source_lsn || "unknown"}`;
      if (changed) await renderAll();
    }
  } catch (err) {
    document.getElementById("live").textContent = "offline: " + err.message;
  }
  setTimeout(poll, POLL_MS);
}

async function start() {
  const main = document.getElementById("main");
  if (!token()) {
    main.replaceChildren(el("p", { class: "error" }, "No credential: open the login link you were given."));
    return;
  }
  try {
    const res = await api("/api/me");
    if (!res.ok) throw new Error(`not ready (${res.status}): ${(await res.json()).error || ""} (reload later)`);
    state.me = await res.json();
  } catch (err) {
    main.replaceChildren(el("p", { class: "error", id: "auth-error" }, err.message));
    return;
  }
  const select = document.getElementById("tenant");
  for (const t of state.me.tenants) {
    select.append(el("option", { value: String(t.tenant_id) }, `${t.tenant_id} · ${t.name} (${t.time_zone})`));
  }
  state.tenant = state.me.tenants.length ? state.me.tenants[0].tenant_id : null;
  document.getElementById("who").textContent =
    state.me.role === "admin" ? "administrator" : `tenant ${state.me.tenant_id}`;
  select.addEventListener("change", () => { state.tenant = Number(select.value); renderAll(); });
  for (const id of ["start", "end"]) document.getElementById(id).addEventListener("change", renderAll);
  const v = await (await api("/api/version")).json();
  state.version = v.version;
  await renderAll();
  setTimeout(poll, POLL_MS);
}

start();
