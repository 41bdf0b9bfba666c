// Small inline SVG charts (no library): bars, lines and stacked areas with titles (and
// descriptions) for screen readers.

import { h } from "./dom.js";

const W = 640;
const H = 220;
const PAD = { l: 56, r: 12, t: 12, b: 36 };

function scale(max) { return (v) => PAD.t + (H - PAD.t - PAD.b) * (1 - (max ? v / max : 0)); }

/** A bar chart of [{label, value}] with a caption; `fmt` formats values. */
export function barChart(title, rows, fmt = String) {
  const max = Math.max(0, ...rows.map((r) => r.value));
  const y = scale(max);
  const bw = (W - PAD.l - PAD.r) / Math.max(rows.length, 1);
  const bars = rows.map((r, i) => {
    const x = PAD.l + i * bw + bw * 0.15;
    const top = y(r.value);
    return [
      h("svg:rect", { x, y: top, width: bw * 0.7, height: H - PAD.b - top, class: "bar" }, h("svg:title", {}, `${r.label}: ${fmt(r.value)}`)),
      h("svg:text", { x: x + bw * 0.35, y: H - PAD.b + 16, "text-anchor": "middle", class: "tick" }, r.label),
    ];
  });
  return chart(title, [axis(max, fmt), bars], rows.map((r) => `${r.label}: ${fmt(r.value)}`));
}

/** A line chart of series [{name, points: [{x, y}]}] over shared x labels. */
export function lineChart(title, xLabels, series, fmt = String) {
  const max = Math.max(0, ...series.flatMap((s) => s.points.map((p) => p.y)));
  const y = scale(max);
  const step = (W - PAD.l - PAD.r) / Math.max(xLabels.length - 1, 1);
  const lines = series.map((s, si) =>
    h("svg:polyline", { class: `line s${si}`, fill: "none", points: s.points.map((p, i) => `${PAD.l + i * step},${y(p.y)}`).join(" ") }, h("svg:title", {}, s.name)));
  const every = Math.ceil(xLabels.length / 12);
  const ticks = xLabels.map((l, i) => (i % every ? null : h("svg:text", { x: PAD.l + i * step, y: H - PAD.b + 16, "text-anchor": "middle", class: "tick" }, l)));
  const legend = h("ul", { class: "legend" }, series.map((s, si) => h("li", { class: `s${si}` }, s.name)));
  const summary = series.map((s) => `${s.name}: ${fmt(s.points[0]?.y ?? 0)} → ${fmt(s.points[s.points.length - 1]?.y ?? 0)}`);
  const fig = chart(title, [axis(max, fmt), lines, ticks], summary);
  fig.append(legend);
  return fig;
}

/**
 * A stacked area chart: series [{name, values}] over ascending x positions `xs` (e.g. day
 * numbers; gaps keep their width), ticks labelled by `xLabel(x)`. `desc` says in words what
 * the picture shows (the svg's <desc>); `fmt` formats values.
 */
export function stackedChart(title, desc, xs, xLabel, series, fmt = String) {
  const totals = xs.map((_, i) => series.reduce((a, s) => a + s.values[i], 0));
  const max = Math.max(0, ...totals);
  const y = scale(max);
  const span = xs[xs.length - 1] - xs[0];
  // One point: a flat band across the width.
  const at = span ? xs.map((x) => PAD.l + ((W - PAD.l - PAD.r) * (x - xs[0])) / span) : [PAD.l, W - PAD.r];
  const val = (v, i) => (span ? v[i] : v[0]);
  let lower = at.map(() => 0);
  const areas = series.map((s, si) => {
    const upper = lower.map((l, i) => l + val(s.values, i));
    const edge = (ys) => at.map((x, i) => `${x.toFixed(1)},${y(ys[i]).toFixed(1)}`);
    const points = [...edge(upper), ...edge(lower).reverse()].join(" ");
    lower = upper;
    return h("svg:polygon", { class: `area s${si}`, points }, h("svg:title", {}, s.name));
  });
  // Up to six evenly spaced labels, the first and the last included.
  const n = span ? Math.min(xs.length, 6) : 1;
  const picks = [...new Set(Array.from({ length: n }, (_, j) => (n > 1 ? Math.round((j * (xs.length - 1)) / (n - 1)) : 0)))];
  const ticks = picks.map((i) => {
    const x = span ? at[i] : (PAD.l + W - PAD.r) / 2;
    const anchor = !span ? "middle" : i === 0 ? "start" : i === xs.length - 1 ? "end" : "middle";
    return h("svg:text", { x, y: H - PAD.b + 16, "text-anchor": anchor, class: "tick" }, xLabel(xs[i]));
  });
  const legend = h("ul", { class: "legend" }, series.map((s, si) => h("li", { class: `s${si}` }, s.name)));
  const fig = chart(title, [axis(max, fmt), areas, ticks], null, desc);
  fig.append(legend);
  return fig;
}

function axis(max, fmt) {
  const y = scale(max);
  return [0, 0.5, 1].map((f) => [
    h("svg:line", { x1: PAD.l, x2: W - PAD.r, y1: y(max * f), y2: y(max * f), class: "grid" }),
    h("svg:text", { x: PAD.l - 6, y: y(max * f) + 4, "text-anchor": "end", class: "tick" }, fmt(max * f)),
  ]);
}

// The figure: an svg named by its <title> (with the summary) or by <title> and <desc>.
function chart(title, parts, summary, desc) {
  const id = `c-${Math.random().toString(36).slice(2, 8)}`;
  const named = desc
    ? [h("svg:title", { id }, title), h("svg:desc", { id: `${id}-d` }, desc)]
    : [h("svg:title", { id }, `${title}. ${summary.join("; ")}`)];
  return h("figure", { class: "chart" },
    h("svg:svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": desc ? `${id} ${id}-d` : id }, named, parts),
    h("figcaption", {}, title));
}
