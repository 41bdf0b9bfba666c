// Operations: the job queue by kind and state with retry of dead jobs, ingest statistics
// (from /metrics), the edges' traffic, storage by tier now and over time (a snapshot a day),
// and the cost model: the actual bill, a what-if tiering policy, and a projection month by
// month, with charts.

import { get, post, qs, api } from "../api.js";
import { h, fill, errorBox, field, fmtBytes, fmtDate, fmtMoney, toast } from "../dom.js";
import { barChart, lineChart, stackedChart } from "../charts.js";

export async function render(main) {
  const jobs = h("section", { class: "card", "aria-labelledby": "ops-jobs" }, h("h2", { id: "ops-jobs" }, "Job queue"));
  const dead = h("section", { class: "card", "aria-labelledby": "ops-dead" }, h("h2", { id: "ops-dead" }, "Dead jobs"));
  const ingest = h("section", { class: "card", "aria-labelledby": "ops-ingest" }, h("h2", { id: "ops-ingest" }, "Ingest"));
  const edges = h("section", { class: "card", "aria-labelledby": "ops-edges" }, h("h2", { id: "ops-edges" }, "Edges"));
  const history = h("section", { class: "card wide", "aria-labelledby": "ops-history", id: "storage-history" }, h("h2", { id: "ops-history" }, "Storage by tier over time"));
  const cost = h("section", { class: "card wide", "aria-labelledby": "ops-cost", id: "cost" }, h("h2", { id: "ops-cost" }, "Storage and cost"));
  fill(main, h("h1", {}, "Operations"), h("div", { class: "ops" }, jobs, dead, ingest, edges), history, cost);
  await Promise.all([queue(jobs), deadJobs(dead), ingestStats(ingest), edgeStats(edges), storageHistory(history), costModel(cost)]);
}

function table(caption, head, rows) {
  return h("div", { class: "table-wrap", tabindex: 0, role: "region", "aria-label": caption }, h("table", {}, h("caption", {}, caption),
    h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c, i) => (i === 0 ? h("th", { scope: "row" }, c) : h("td", {}, c))))))));
}

async function queue(box) {
  try {
    const s = await get("/v1/jobs/stats");
    const q = s.queue;
    const states = ["queued", "running", "done", "dead"];
    box.append(
      h("p", {}, `${s.workers} workers on ${s.backend}; oldest due job waited ${q.oldest_queued_secs ? `${q.oldest_queued_secs.toFixed(1)} s` : "–"}; ${q.expired_leases} expired leases.`),
      table("Jobs by kind and state", ["Kind", ...states], Object.entries(q.by_kind).map(([k, m]) => [k, ...states.map((st) => m[st] || 0)])),
      table("Images by status", ["Status", "Images"], Object.entries(q.images).map(([k, n]) => [k, n])));
  } catch (e) { box.append(errorBox(e)); }
}

async function deadJobs(box) {
  const kind = h("select", { name: "dead-kind" }, ["", "process", "embed", "duplicates", "sync_payload", "delete", "tier_cold", "tier_hot"].map((k) => h("option", { value: k }, k || "any kind")));
  const list = h("div", { "aria-live": "polite" });
  async function load() {
    try {
      const d = await get(`/v1/jobs${qs({ state: "dead", kind: kind.value, limit: 50 })}`);
      if (!d.items.length) { fill(list, h("p", { class: "muted" }, "No dead jobs.")); return; }
      fill(list, table("Dead jobs, newest first", ["Job", "Kind", "Image", "Attempts", "Last error", "Updated", ""], d.items.map((j) => [
        String(j.id), j.kind, h("a", { href: `/admin/images/${j.image_id}` }, j.image_id.slice(0, 8)), String(j.attempts), j.last_error || "–", fmtDate(j.updated_at),
        h("button", { type: "button", class: "small", "aria-label": `Retry job ${j.id}`, onclick: async () => {
          try { await post(`/v1/jobs/${j.id}/retry`); toast(`Job ${j.id} queued again.`); load(); } catch (e) { toast(e.message, "error"); }
        } }, "Retry")])));
    } catch (e) { fill(list, errorBox(e)); }
  }
  kind.addEventListener("change", load);
  box.append(field("Kind", kind), list);
  await load();
}

/** Prometheus text → [{name, labels, value}]. */
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{([^}]*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const p of (m[3] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[p[1]] = p[2];
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

async function ingestStats(box) {
  try {
    const r = await fetch("/metrics", { credentials: "same-origin" });
    if (!r.ok) throw new Error(`metrics: HTTP ${r.status}`);
    const ms = parseMetrics(await r.text());
    const finished = ms.filter((m) => m.name === "flexphoto_jobs_finished_total");
    const stages = {};
    for (const m of ms.filter((x) => x.name.startsWith("flexphoto_ingest_stage_seconds_"))) {
      const st = (stages[m.labels.stage] ||= {});
      if (m.name.endsWith("_sum")) st.sum = m.value;
      if (m.name.endsWith("_count")) st.count = m.value;
    }
    const rows = Object.entries(stages).filter(([, v]) => v.count).map(([k, v]) => ({ label: k, value: (v.sum / v.count) * 1000 }));
    box.append(
      finished.length ? table("Finished job attempts since start", ["Kind", "Outcome", "Count"], finished.map((m) => [m.labels.kind, m.labels.outcome, String(m.value)])) : h("p", { class: "muted" }, "No job finished since this process started."),
      rows.length ? barChart("Average time per image and stage (ms)", rows, (v) => v.toFixed(0)) : null);
  } catch (e) { box.append(errorBox(e)); }
}

async function edgeStats(box) {
  try {
    const c = await get("/v1/cluster");
    const edges = c.edges || [];
    box.append(
      edges.length ? table("Edges (traffic they pushed)", ["Edge", "Requests", "Edge cache hits", "Bytes", "Last push"], edges.map((e) => [e.name, String(e.requests), `${e.edge_hits} (${e.requests ? Math.round((100 * e.edge_hits) / e.requests) : 0}%)`, fmtBytes(e.bytes), fmtDate(e.last_push_at)]))
        : h("p", { class: "muted" }, "No edge has pushed traffic yet."),
      table("Deployment roles", ["Role", "Held by", "Live"], (c.roles || []).map((r) => [r.role, r.holder ? (r.holder.id || r.holder.url || JSON.stringify(r.holder)) : "–", r.live ? "yes" : "no"])));
  } catch (e) { box.append(errorBox(e)); }
}

// Standard (hot) at the bottom of the stack, cold above it, any other tier after them.
const TIER_ORDER = ["standard", "cold"];
function tierRank(t) { const i = TIER_ORDER.indexOf(t); return i < 0 ? TIER_ORDER.length : i; }

async function storageHistory(box) {
  const period = h("select", { name: "history-days" }, [[30, "Last 30 days"], [90, "Last 90 days"], [365, "Last year"], [3650, "Everything kept"]]
    .map(([v, l]) => h("option", { value: v, selected: v === 90 }, l)));
  const out = h("div", { "aria-live": "polite" });
  async function load() {
    try { fill(out, historyView(await get(`/v1/storage/history${qs({ days: period.value })}`))); } catch (e) { fill(out, errorBox(e)); }
  }
  period.addEventListener("change", load);
  box.append(field("Period", period), out);
  await load();
}

/** The chart and its table from GET /v1/storage/history. */
function historyView(r) {
  const days = r.items;
  if (!days.length) return h("p", { class: "muted" }, `No snapshot yet: the tiering pass records one a day (kept ${r.retention_days} days).`);
  const tiers = [...new Set(days.flatMap((d) => d.tiers.map((t) => t.tier)))].sort((a, b) => tierRank(a) - tierRank(b) || a.localeCompare(b));
  const of = (d, tier) => d.tiers.find((t) => t.tier === tier) || { bytes: 0, objects: 0 };
  const total = (d) => d.tiers.reduce((a, t) => a + t.bytes, 0);
  const dayNumber = (day) => Date.parse(`${day}T00:00:00Z`) / 86400000;
  const dayLabel = (n) => new Date(n * 86400000).toLocaleDateString(undefined, { month: "short", day: "numeric", timeZone: "UTC" });
  const first = days[0];
  const last = days[days.length - 1];
  const desc = `${days.length} daily snapshots from ${first.day} to ${last.day}. `
    + tiers.map((t) => `${t}: ${fmtBytes(of(first, t).bytes)} → ${fmtBytes(of(last, t).bytes)}`).join("; ")
    + `; all tiers: ${fmtBytes(total(first))} → ${fmtBytes(total(last))}.`;
  return [
    h("p", {}, `${days.length} days recorded from ${first.day} to ${last.day} (UTC); snapshots are kept ${r.retention_days} days. A day the tiering pass did not run has no snapshot; the chart joins its neighbours.`),
    tiers.length
      ? stackedChart("Bytes stored by tier, per day", desc, days.map((d) => dayNumber(d.day)), dayLabel, tiers.map((t) => ({ name: t, values: days.map((d) => of(d, t).bytes) })), fmtBytes)
      : h("p", { class: "muted" }, "Nothing was stored on these days."),
    h("details", { class: "history-table" }, h("summary", {}, "The same figures as a table"),
      table("Bytes (objects) stored by tier, per day", ["Day (UTC)", ...tiers, "All tiers"],
        days.map((d) => [d.day, ...tiers.map((t) => `${fmtBytes(of(d, t).bytes)} (${of(d, t).objects})`), fmtBytes(total(d))]))),
  ];
}

function billTable(caption, bill, cur) {
  return table(caption, ["Item", "Quantity", "Unit price", "Monthly"], bill.items.map((i) => [i.item, `${i.quantity.toFixed(2)} ${i.unit}`, fmtMoney(i.unit_price, cur), fmtMoney(i.monthly, cur)]).concat([["Total", "", "", fmtMoney(bill.total, cur)]]));
}

async function costModel(box) {
  const out = h("div");
  const whatIf = h("div", { "aria-live": "polite" });
  const proj = h("div", { "aria-live": "polite" });
  const after = h("input", { type: "number", name: "cold_after_days", min: 0 });
  const hits = h("input", { type: "number", name: "cold_max_hits", min: 0 });
  const windowDays = h("input", { type: "number", name: "cold_window_days", min: 0 });
  box.append(out,
    h("h3", {}, "What if"),
    h("form", { class: "grid-form", onsubmit: async (ev) => { ev.preventDefault(); await showWhatIf(); } },
      field("Move to cold after (days)", after), field("… with fewer views than", hits), field("… in this many days", windowDays), h("button", { type: "submit" }, "Compare")),
    whatIf);
  let report;
  async function showWhatIf() {
    try {
      const r = await get(`/v1/cost${qs({ cold_after_days: after.value, cold_max_hits: hits.value, cold_window_days: windowDays.value })}`);
      const w = r.what_if;
      fill(whatIf, h("p", {}, `With this policy: ${w.images_to_cold} images (${fmtBytes(w.bytes_to_cold)}) to cold, ${w.images_to_hot} back to hot; monthly saving ${fmtMoney(w.monthly_saving, r.currency)}, one-time cost ${fmtMoney(w.one_time_cost, r.currency)}.`),
        barChart("Monthly bill: actual and with the policy", [{ label: "actual", value: r.actual.total }, { label: "with policy", value: w.bill.total }], (v) => fmtMoney(v, r.currency)),
        billTable("Bill with the policy", w.bill, r.currency));
    } catch (e) { fill(whatIf, errorBox(e)); }
  }
  try {
    report = await get("/v1/cost");
    const cur = report.currency;
    const tiers = {};
    for (const s of report.storage) tiers[s.tier] = (tiers[s.tier] || 0) + s.bytes;
    fill(out,
      h("p", {}, `Generated ${fmtDate(report.generated_at)}. Last 30 days: ${report.traffic_30d.requests} requests, ${fmtBytes(report.traffic_30d.bytes)} served${report.edge_hit_ratio !== null ? `, edge hit ratio ${(report.edge_hit_ratio * 100).toFixed(0)}%` : ""}.`),
      h("div", { class: "charts" },
        barChart("Storage by tier", Object.entries(tiers).map(([t, b]) => ({ label: t, value: b })), fmtBytes),
        barChart("Actual monthly bill by item", report.actual.items.map((i) => ({ label: i.item.split(" ")[0], value: i.monthly })), (v) => fmtMoney(v, cur))),
      table("Storage by tier and kind", ["Tier", "Kind", "Objects", "Bytes"], report.storage.map((s) => [s.tier, s.kind, String(s.objects), fmtBytes(s.bytes)])),
      billTable("Actual monthly bill", report.actual, cur),
      h("p", {}, `The configured tiering policy would move ${report.what_if.images_to_cold} images to cold storage and save ${fmtMoney(report.what_if.monthly_saving, cur)} a month.`));
  } catch (e) { fill(out, errorBox(e)); }

  // Projection.
  const inputs = {
    months: [24, "Months"], daily_uploads: [1000, "Uploads a day"], avg_original_mb: [4, "Average original (MB)"],
    views_per_upload: [50, "Views per upload"], avg_view_kb: [150, "Average view (KB)"], edge_hit_ratio: [0.8, "Edge hit ratio (0–1)"],
  };
  const fields = Object.fromEntries(Object.entries(inputs).map(([k, [v]]) => [k, h("input", { type: "number", name: k, value: v, step: "any", min: 0 })]));
  const classSel = h("select", { name: "originals_class" }, ["STANDARD", "STANDARD_IA", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE"].map((c) => h("option", { value: c }, c)));
  box.append(h("h3", {}, "Projection"),
    h("form", { class: "grid-form", onsubmit: async (ev) => {
      ev.preventDefault();
      const body = Object.fromEntries(Object.entries(fields).map(([k, i]) => [k, Number(i.value)]));
      body.originals_class = classSel.value;
      try {
        const p = await api("POST", "/v1/cost/projection", body);
        const cur = report?.currency || "USD";
        const labels = p.months.map((m) => String(m.month));
        fill(proj, h("p", {}, `Total over ${p.months.length} months: ${fmtMoney(p.total, cur)}.`),
          h("div", { class: "charts" },
            lineChart("Monthly bill", labels, [{ name: "bill", points: p.months.map((m) => ({ y: m.bill.total })) }], (v) => fmtMoney(v, cur)),
            lineChart("Stored and served per month (GB)", labels, [{ name: "stored GB", points: p.months.map((m) => ({ y: m.stored_gb })) }, { name: "served GB", points: p.months.map((m) => ({ y: m.served_gb })) }], (v) => v.toFixed(0))));
      } catch (e) { fill(proj, errorBox(e)); }
    } }, Object.entries(fields).map(([k, i]) => field(inputs[k][1], i)), field("Originals storage class", classSel), h("button", { type: "submit", class: "primary" }, "Project")),
    proj);
}
