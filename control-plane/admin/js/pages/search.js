// Search: a description, or an image dropped (or chosen) to find similar ones, combined with
// the filters; results with their score and why they matched.

import { post, qs, hasRoute } from "../api.js";
import { h, fill, thumb, errorBox, field } from "../dom.js";
import { filterForm, CATALOG_FILTERS } from "../filters.js";

export async function render(main, { query }) {
  const values = Object.fromEntries(query.entries());
  const catalog = await hasRoute("/v1/collections");
  const filters = filterForm(values, { search: true, extra: catalog ? CATALOG_FILTERS : [] });
  const text = h("input", { type: "search", name: "text", value: values.text || "", placeholder: "e.g. a dog on a beach", autocomplete: "off" });
  const minScore = h("input", { type: "number", name: "min_score", step: "0.01", min: "-1", max: "1", value: values.min_score || "" });
  const file = h("input", { type: "file", name: "image", accept: "image/*" });
  const preview = h("div", { class: "drop-preview", "aria-live": "polite" });
  let dropped = null;
  const setImage = (f) => {
    dropped = f;
    fill(preview, f ? [h("img", { src: URL.createObjectURL(f), alt: `Query image ${f.name}`, width: 96, height: 96 }), ` ${f.name} `,
      h("button", { type: "button", class: "link", onclick: () => { file.value = ""; setImage(null); } }, "Remove")] : "No image chosen.");
  };
  file.addEventListener("change", () => setImage(file.files[0] || null));
  const zone = h("div", { class: "dropzone", id: "search-drop" },
    h("p", {}, "Drop an image here to find similar ones, or ", h("label", { for: "search-file", class: "linklike" }, "choose a file"), "."),
    preview);
  file.id = "search-file";
  file.className = "visually-hidden";
  zone.append(file);
  dropTarget(zone, (files) => setImage(files[0]));
  setImage(null);

  const results = h("section", { "aria-label": "Results", "aria-live": "polite" });
  const more = h("button", { type: "button", hidden: true }, "More results");
  let cursor = null;
  let lastBody = null;

  async function run(next) {
    const f = filters.read();
    let body;
    if (dropped) {
      body = new FormData();
      body.append("image", dropped, dropped.name);
      for (const [k, v] of Object.entries(f)) body.append(k, v);
      if (minScore.value) body.append("min_score", minScore.value);
      if (next) body.append("cursor", next);
    } else {
      body = { ...f, text: text.value.trim() || undefined, min_score: minScore.value ? Number(minScore.value) : undefined, cursor: next || undefined };
      if (body.tags) body.tags = body.tags.split(",").map((t) => t.trim()).filter(Boolean);
    }
    lastBody = body;
    if (!next) fill(results, h("p", { class: "muted" }, "Searching…"));
    try {
      const data = await post("/v1/search", body);
      if (!next) {
        fill(results, h("p", { class: "summary" }, `${data.items.length}${data.next_cursor ? "+" : ""} result(s) · mode ${data.mode} · sorted by ${data.sort}${data.model ? ` · model ${data.model}` : ""}`),
          h("ol", { class: "results" }));
      }
      const ol = results.querySelector("ol");
      for (const r of data.items) ol.append(result(r));
      cursor = data.next_cursor;
      more.hidden = !cursor;
    } catch (e) {
      fill(results, errorBox(e));
    }
  }
  more.addEventListener("click", () => lastBody && run(cursor));
  const form = h("form", { class: "card", role: "search", onsubmit: (ev) => {
    ev.preventDefault();
    history.replaceState(null, "", `/admin/search${qs({ text: text.value.trim(), ...filters.read() })}`);
    run(null);
  } },
  field("Describe what you are looking for", text),
  zone,
  h("details", {}, h("summary", {}, "Filters and minimum score"), filters.el, field("Minimum score (−1 to 1)", minScore)),
  h("button", { type: "submit", class: "primary" }, "Search"));
  fill(main, h("h1", {}, "Search"), form, results, h("div", { class: "center" }, more));
  if (values.text) run(null);
}

function result(r) {
  const ex = r.explanation || {};
  const concepts = (ex.concepts || []).map((c) => `${c.label} (${c.weight.toFixed(2)})`).join(", ");
  const own = (ex.image_concepts || []).slice(0, 5).map((c) => c.label).join(", ");
  return h("li", { class: "result" },
    h("a", { href: `/admin/images/${r.id}` }, thumb(r, "160px")),
    h("div", {},
      h("p", {}, h("a", { href: `/admin/images/${r.id}` }, r.caption || r.id)),
      r.score !== null && r.score !== undefined ? h("p", { class: "score" }, `Score ${r.score.toFixed(3)}`) : null,
      h("p", { class: "explain" }, ex.summary || ""),
      concepts ? h("p", { class: "muted" }, `Matched concepts: ${concepts}`) : null,
      own ? h("p", { class: "muted" }, `Its concepts: ${own}`) : null,
      ex.filters && ex.filters.length ? h("p", { class: "muted" }, `Filters applied: ${ex.filters.join("; ")}`) : null));
}

/** Makes `el` accept dropped files (highlighted while dragging over). */
export function dropTarget(el, onFiles) {
  el.addEventListener("dragover", (ev) => { ev.preventDefault(); el.classList.add("over"); });
  el.addEventListener("dragleave", () => el.classList.remove("over"));
  el.addEventListener("drop", (ev) => {
    ev.preventDefault();
    el.classList.remove("over");
    const files = [...(ev.dataTransfer?.files || [])];
    if (files.length) onFiles(files);
  });
}
