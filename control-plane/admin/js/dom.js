// DOM helpers: element building without innerHTML (no markup injection), formatting,
// messages and image sources.

/** Builds an element: h("a", {href, class: "x", onclick}, child, "text", [more]). */
export function h(tag, attrs, ...children) {
  const el = tag.includes(":") ? document.createElementNS("http://www.w3.org/2000/svg", tag.split(":")[1]) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.setAttribute("class", v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && !(el instanceof SVGElement) && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Shows a short message to screen readers and sighted users. */
export function toast(msg, kind = "info") {
  const t = document.getElementById("toast");
  fill(t, h("p", { class: `toast ${kind}` }, msg));
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.replaceChildren(), 6000);
}

/** An error box (role=alert) for a failed call. */
export function errorBox(e) {
  const status = e && e.status ? ` (${e.status}${e.code ? " " + e.code : ""})` : "";
  return h("p", { class: "error", role: "alert" }, `${(e && e.message) || e}${status}`);
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const u = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1000 && i < u.length - 1) { v /= 1000; i++; }
  return `${v.toFixed(v < 10 && i ? 1 : 0)} ${u[i]}`;
}

export function fmtDate(s) {
  if (!s) return "–";
  const d = new Date(s);
  return isNaN(d) ? String(s) : d.toLocaleString();
}

export function fmtMoney(n, cur = "USD") {
  return new Intl.NumberFormat(undefined, { style: "currency", currency: cur, maximumFractionDigits: 2 }).format(n || 0);
}

/** A thumbnail <img> of an image document: variant first, sized URLs for srcset. */
export function thumb(img, sizes = "(max-width: 600px) 45vw, 200px") {
  const v = img.variants || {};
  const s = img.sized_urls || {};
  const src = v.thumb || s["320"] || img.thumb;
  const label = img.caption || (img.tags && img.tags.join(", ")) || `image ${img.id}`;
  if (!src) return h("div", { class: "nothumb", role: "img", "aria-label": `${label} (${img.status || "no preview"})` }, img.status || "no preview");
  const set = [];
  if (v.thumb) set.push(`${v.thumb} 320w`);
  else if (s["320"]) set.push(`${s["320"]} 320w`);
  if (s["640"]) set.push(`${s["640"]} 640w`);
  return h("img", { src, srcset: set.join(", ") || undefined, sizes, loading: "lazy", decoding: "async", alt: label, width: 320, height: 320 });
}

/** Turns a date input value (YYYY-MM-DD) into RFC 3339 at UTC midnight. */
export function dayToRfc3339(v) { return v ? `${v}T00:00:00Z` : ""; }

/** A labelled form field. */
export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  const hintId = hint ? `${id}-hint` : undefined;
  if (hintId) input.setAttribute("aria-describedby", hintId);
  return h("div", { class: "field" }, h("label", { for: id }, label), input, hint ? h("small", { id: hintId }, hint) : null);
}

/** A definition list from [term, value] pairs, leaving out empty values. */
export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== "").map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}
