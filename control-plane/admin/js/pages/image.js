// One image: the picture at any size from the edge, descriptive / workflow / technical
// metadata apart, editing with the API's validation messages, the history as a diff with
// restore, near-duplicates side by side, versions and lineage, rights, tier and access
// counts, and a signed URL builder.

import { get, patch, post, del, qs, can, hasRoute, ApiError } from "../api.js";
import { h, fill, facts, field, fmtBytes, fmtDate, errorBox, toast, thumb } from "../dom.js";

export async function render(main, { match, navigate }) {
  const id = match[1];
  const doc = await get(`/v1/images/${id}`);
  const catalog = doc.version !== undefined && doc.descriptive !== undefined;
  const title = (catalog && doc.descriptive.values.title) || doc.caption || `Image ${id.slice(0, 8)}`;
  const sections = h("div", { class: "image-cols" },
    h("div", {}, picture(doc), urlBuilder(id), duplicates(doc)),
    h("div", {}, descriptive(doc, catalog, () => render(main, { match, navigate })), workflow(doc, catalog, () => render(main, { match, navigate })),
      technical(doc), rightsAndLineage(doc, catalog), lifecycle(doc), history(doc, catalog, () => render(main, { match, navigate })),
      can("uploader") ? h("section", { class: "card" }, h("h2", {}, "Delete"), h("button", { type: "button", class: "danger", onclick: async () => {
        if (!confirm("Delete this image everywhere?")) return;
        try { await del(`/v1/images/${id}`); toast("Deleted."); navigate("/admin/library"); } catch (e) { toast(e.message, "error"); }
      } }, "Delete image")) : null));
  fill(main, h("p", {}, h("a", { href: "/admin/library" }, "← Library")), h("h1", {}, title), sections);
}

function picture(doc) {
  const urls = doc.sized_urls || {};
  const widths = Object.keys(urls).map(Number).sort((a, b) => a - b);
  if (!widths.length) return h("section", { class: "card" }, h("h2", {}, "Picture"), h("p", { class: "muted" }, `No picture yet: ${doc.status}${doc.error ? ` (${doc.error})` : ""}.`));
  const img = h("img", { class: "hero", src: urls[String(widths[Math.min(2, widths.length - 1)])], srcset: widths.map((w) => `${urls[w]} ${w}w`).join(", "), sizes: "(max-width: 900px) 100vw, 60vw", alt: doc.caption || `Image ${doc.id}`, width: doc.width || undefined, height: doc.height || undefined });
  const size = h("select", { name: "view-size" }, widths.map((w) => h("option", { value: w }, `${w} px wide`)), h("option", { value: "original" }, "original"));
  size.value = String(widths[Math.min(2, widths.length - 1)]);
  size.addEventListener("change", () => {
    img.removeAttribute("srcset");
    img.src = size.value === "original" ? doc.original_url : urls[size.value];
  });
  return h("section", { class: "card" }, h("h2", {}, "Picture"), img, field("Show at", size),
    h("p", { class: "muted" }, Object.entries(doc.variants || {}).map(([n, u]) => [h("a", { href: u, target: "_blank", rel: "noopener" }, n), " "])));
}

/** Builds an edge URL (signed when the edges sign) for any size and format. */
function urlBuilder(id) {
  const w = h("input", { type: "number", name: "w", min: 1, max: 8192, value: 800 });
  const hh = h("input", { type: "number", name: "h", min: 1, max: 8192 });
  const fit = h("select", { name: "fit" }, ["", "scale-down", "contain", "cover", "fill", "pad", "crop"].map((f) => h("option", { value: f }, f || "default")));
  const fmt = h("select", { name: "fmt" }, ["", "auto", "webp", "avif", "jpeg", "png"].map((f) => h("option", { value: f }, f || "source")));
  const q = h("input", { type: "number", name: "q", min: 1, max: 100 });
  const out = h("div", { "aria-live": "polite" });
  return h("section", { class: "card" }, h("h2", {}, "URL for any size"),
    h("form", { class: "grid-form", onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        const r = await get(`/v1/images/${id}/url${qs({ w: w.value, h: hh.value, fit: fit.value, fmt: fmt.value, q: q.value })}`);
        const link = h("input", { type: "text", readOnly: true, value: r.url, class: "url", "aria-label": "Edge URL" });
        fill(out, field("Edge URL", link), h("button", { type: "button", onclick: () => navigator.clipboard?.writeText(r.url).then(() => toast("Copied.")) }, "Copy"),
          h("p", {}, h("img", { src: r.url, alt: "Preview at the requested size", class: "preview" })));
      } catch (e) { fill(out, errorBox(e)); }
    } }, field("Width", w), field("Height", hh), field("Fit", fit), field("Format", fmt), field("Quality", q), h("button", { type: "submit" }, "Make URL")),
    out);
}

function descriptive(doc, catalog, reload) {
  const values = catalog ? doc.descriptive.values : { caption: doc.caption, tags: doc.tags };
  const editable = can("uploader");
  const caption = h("textarea", { name: "caption", rows: 3, maxLength: 2000 }, values.caption || "");
  const tagsKey = catalog ? "keywords" : "tags";
  const tags = h("input", { type: "text", name: "tags", value: (values[tagsKey] || []).join(", "), autocomplete: "off" });
  const titleIn = h("input", { type: "text", name: "title", value: values.title || "", autocomplete: "off" });
  const reason = h("input", { type: "text", name: "reason", maxLength: 2000, autocomplete: "off" });
  const msg = h("div", { "aria-live": "polite" });
  const others = catalog ? Object.entries(values).filter(([k]) => !["caption", "keywords", "title"].includes(k)) : [];
  const failures = catalog ? (doc.descriptive.validation?.failures || []) : [];
  const form = h("form", { class: "edit", onsubmit: async (ev) => {
    ev.preventDefault();
    fill(msg);
    const list = tags.value.split(",").map((t) => t.trim()).filter(Boolean);
    try {
      if (catalog) {
        await patch(`/v1/images/${doc.id}/metadata`, { values: { title: titleIn.value || null, caption: caption.value || null, keywords: list }, version: doc.version, reason: reason.value || undefined });
      } else {
        await patch(`/v1/images/${doc.id}`, { caption: caption.value || null, tags: list, reason: reason.value || undefined });
      }
      toast("Saved.");
      reload();
    } catch (e) { fill(msg, validation(e)); }
  } },
  catalog ? field("Title", titleIn) : null,
  field("Caption", caption),
  field(catalog ? "Keywords (comma-separated)" : "Tags (comma-separated)", tags),
  field("Why (kept in the history)", reason),
  msg,
  editable ? h("button", { type: "submit", class: "primary" }, "Save") : h("p", { class: "muted" }, "Your role may only view."));
  if (!editable) for (const el of form.querySelectorAll("input, textarea")) el.readOnly = true;
  return h("section", { class: "card" }, h("h2", {}, "Descriptive"),
    catalog && doc.collection ? h("p", {}, `Collection: ${doc.collection.name}`) : null,
    form,
    others.length ? facts(others.map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : String(v)])) : null,
    catalog && doc.descriptive.terms?.length ? h("p", {}, `Terms: ${doc.descriptive.terms.map((t) => t.label).join(", ")}`) : null,
    failures.length ? h("div", { class: "warn" }, h("p", {}, "Fails the collection's schema:"), h("ul", {}, failures.map((f) => h("li", {}, `${f.field}: ${f.message || f.rule}`)))) : null);
}

/** The API's validation answer, with every failing field when it lists them. */
function validation(e) {
  const failures = e instanceof ApiError && e.body?.error?.failures;
  if (failures && failures.length) {
    return h("div", { class: "error", role: "alert" }, h("p", {}, e.message), h("ul", {}, failures.map((f) => h("li", {}, `${f.field}: ${f.message || f.rule}`))));
  }
  if (e.status === 409) return h("p", { class: "error", role: "alert" }, `Someone else changed this image first (${e.message}). Reload to see their change, then try again.`);
  return errorBox(e);
}

function workflow(doc, catalog, reload) {
  const wf = catalog ? doc.workflow : null;
  const rows = [
    ["Status", doc.status], ["Error", doc.error], ["Review state", doc.review_state?.replace(/_/g, " ")], ["Review reason", doc.review_reason],
    wf ? ["Workflow state", wf.state] : null,
    ["Uploaded", fmtDate(doc.uploaded_at)], ["Processed", fmtDate(doc.processed_at)], ["Owner", doc.owner],
    ["Visibility", doc.private ? "private: signed URLs that expire" : "public"],
  ].filter(Boolean);
  const reasons = wf?.review?.reasons || [];
  const msg = h("div", { "aria-live": "polite" });
  const act = async (body) => {
    try { await (catalog ? post(`/v1/images/${doc.id}/workflow`, { ...body, version: doc.version }) : patch(`/v1/images/${doc.id}`, body)); toast("Done."); reload(); } catch (e) { fill(msg, validation(e)); }
  };
  const buttons = [];
  if (catalog && can("uploader")) {
    for (const s of wf.next_states || []) buttons.push(h("button", { type: "button", onclick: () => act({ to: s }) }, `Move to ${s.replace(/_/g, " ")}`));
  } else if (!catalog && can("reviewer")) {
    for (const s of ["approved", "rejected", "needs_review"]) if (s !== doc.review_state) buttons.push(h("button", { type: "button", onclick: () => act({ review_state: s, reason: "set in the admin UI" }) }, s === "needs_review" ? "Send to review" : s === "approved" ? "Approve" : "Reject"));
  }
  if (can("uploader")) {
    buttons.push(h("button", { type: "button", "data-action": "privacy", onclick: async () => {
      try { await patch(`/v1/images/${doc.id}`, { private: !doc.private, reason: "set in the admin UI" }); toast("Done."); reload(); } catch (e) { fill(msg, validation(e)); }
    } }, doc.private ? "Make public" : "Make private"));
  }
  return h("section", { class: "card" }, h("h2", {}, "Workflow"), facts(rows),
    reasons.length ? h("ul", { class: "reasons" }, reasons.map((r) => h("li", {}, reasonText(r)))) : null,
    buttons.length ? h("div", { class: "row" }, buttons) : null, msg);
}

/** A review reason in words. */
export function reasonText(r) {
  if (r.summary) return `${(r.kind || "reason").replace(/_/g, " ")}: ${r.summary}`;
  return r.message || JSON.stringify(r);
}

function technical(doc) {
  const t = doc.technical || doc;
  const exif = doc.exif && typeof doc.exif === "object" ? Object.entries(doc.exif) : [];
  return h("section", { class: "card" }, h("h2", {}, "Technical"), facts([
    ["Format", t.format || doc.mime], ["Size", t.width ? `${t.width} × ${t.height}` : null], ["Bytes", fmtBytes(t.bytes)],
    ["Camera", [t.camera_make, t.camera_model].filter(Boolean).join(" ")], ["Lens", t.lens], ["Taken", t.taken_at ? fmtDate(t.taken_at) : null],
    ["Exposure", [t.exposure_time ? `1/${Math.round(1 / t.exposure_time)} s` : null, t.f_number ? `f/${t.f_number}` : null, t.iso ? `ISO ${t.iso}` : null, t.focal_length ? `${t.focal_length} mm` : null].filter(Boolean).join(" · ")],
    ["GPS", doc.gps ? `${doc.gps.lat.toFixed(5)}, ${doc.gps.lon.toFixed(5)}` : null], ["Perceptual hash", t.phash || doc.phash], ["SHA-256", doc.sha256],
  ]), exif.length ? h("details", {}, h("summary", {}, `All EXIF fields (${exif.length})`), facts(exif.map(([k, v]) => [k, String(v)]))) : null);
}

function rightsAndLineage(doc, catalog) {
  if (!catalog) return null;
  const r = doc.rights || {};
  const l = doc.lineage || {};
  const chain = h("div", {});
  hasRoute("/v1/images/{id}/lineage").then(async (yes) => {
    if (!yes) return;
    try {
      const lin = await get(`/v1/images/${doc.id}/lineage`);
      if (lin.chain.length > 1) {
        fill(chain, h("h3", {}, "Versions"), h("ol", { class: "chain" }, lin.chain.map((v) => h("li", {},
          v.id === doc.id ? h("strong", {}, `version ${v.version_number} (this one)`) : h("a", { href: `/admin/images/${v.id}` }, `version ${v.version_number}`),
          v.relation ? ` · ${v.relation}${v.derived_from ? ` of ${v.derived_from.slice(0, 8)}` : ""}` : "", v.current ? " · current" : ""))));
      }
    } catch (e) { fill(chain, errorBox(e)); }
  });
  return h("section", { class: "card" }, h("h2", {}, "Rights and versions"), chain, facts([
    ["Rights", r.state], ["Holder", r.holder], ["Licence", r.licence], ["Restrictions", r.usage_restrictions],
    ["Valid from", r.valid_from ? fmtDate(r.valid_from) : null], ["Valid until", r.valid_until ? fmtDate(r.valid_until) : null],
    ["URLs withheld", r.withheld ? "yes (outside the rights window)" : null],
    ["Version", l.version_number ? `${l.version_number}${l.current ? " (current)" : ""}` : null],
    ["Derived from", l.derived_from ? h("a", { href: `/admin/images/${l.derived_from}` }, `${l.derived_from.slice(0, 8)} (${l.relation || "version"})`) : null],
    ["First version", l.root && l.root !== doc.id ? h("a", { href: `/admin/images/${l.root}` }, l.root.slice(0, 8)) : null],
  ]));
}

function lifecycle(doc) {
  const lc = doc.lifecycle;
  if (!lc) return h("section", { class: "card" }, h("h2", {}, "Storage"), facts([["Tier", doc.storage_tier]]));
  const a = lc.access || {};
  const msg = h("div", { "aria-live": "polite" });
  const restore = lc.tier === "cold" && can("uploader") ? h("button", { type: "button", onclick: async () => {
    try { const r = await post(`/v1/images/${doc.id}/restore`, undefined, { accept: [202] }); fill(msg, h("p", { class: "ok" }, `Restore: ${JSON.stringify(r.status)}`)); } catch (e) { fill(msg, errorBox(e)); }
  } }, "Restore to hot storage") : null;
  return h("section", { class: "card" }, h("h2", {}, "Storage and traffic"), facts([
    ["Tier", lc.tier], ["Tier changed", lc.tier_changed_at ? fmtDate(lc.tier_changed_at) : null], ["Restore", lc.restore_state],
    ["Last viewed", lc.last_accessed_at ? fmtDate(lc.last_accessed_at) : "never"],
    ["Views, 7 days", a.requests_7d], ["Views, 30 days", a.requests_30d], ["Bytes served, 30 days", a.bytes_30d !== undefined ? fmtBytes(a.bytes_30d) : null],
  ]), lc.objects ? h("details", {}, h("summary", {}, `Stored objects (${lc.objects.length})`), h("ul", {}, lc.objects.map((o) => h("li", {}, `${o.kind}: ${fmtBytes(o.bytes)} · ${o.tier}`)))) : null, restore, msg);
}

function show(v) {
  if (v === null || v === undefined) return "∅";
  return typeof v === "string" ? `“${v}”` : JSON.stringify(v);
}

/** The history as a table of diffs; each change can be restored. */
function history(doc, catalog, reload) {
  const box = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  (async () => {
    try {
      const hist = await get(`/v1/images/${doc.id}/history`);
      box.dataset.loaded = "1";
      if (!hist.items.length) { fill(box, h("p", { class: "muted" }, "No changes yet.")); return; }
      // Changes in order (entries of one change share `change`); undoing a change restores
      // the state right after the change before it.
      const changes = [...new Set(hist.items.map((e) => e.change).filter(Boolean))];
      const firstEntryOf = (c) => hist.items.find((x) => x.change === c);
      const rows = hist.items.slice().reverse().map((e) => {
        const diff = e.diff?.summary || diffText(e);
        const prev = catalog && e.change ? changes[changes.indexOf(e.change) - 1] : undefined;
        const canRestore = can("uploader") && (["caption", "tags", "review_state", "private"].includes(e.field) || (catalog && (prev || e.diff)));
        const btn = canRestore ? h("button", { type: "button", class: "small", "aria-label": `Restore ${e.field} to before change ${e.id}`, onclick: async () => {
          try {
            const reason = `undo of change ${e.id}`;
            if (catalog && prev && e.field !== "private") await post(`/v1/images/${doc.id}/history/${firstEntryOf(prev).id}/restore`, { version: doc.version, reason });
            else if (catalog && !["review_state", "private"].includes(e.field)) await patch(`/v1/images/${doc.id}/metadata`, { values: { [e.field]: e.old_value ?? null }, version: doc.version, reason });
            else await patch(`/v1/images/${doc.id}`, { [e.field]: e.old_value ?? (e.field === "tags" ? [] : null), reason });
            toast("Restored.");
            reload();
          } catch (err) { toast(err.status === 409 ? `Someone changed it first: ${err.message}` : err.message, "error"); }
        } }, "Restore old value") : null;
        return h("tr", {}, h("td", {}, fmtDate(e.at)), h("td", {}, e.field), h("td", { class: "diff" }, diff), h("td", {}, e.actor, e.reason ? h("br") : null, e.reason ? h("small", {}, e.reason) : null), h("td", {}, btn));
      });
      fill(box, h("div", { class: "table-wrap", tabindex: 0, role: "region", "aria-label": "History" }, h("table", { class: "history" }, h("caption", { class: "visually-hidden" }, "Changes, newest first"),
        h("thead", {}, h("tr", {}, ["When", "Field", "Change", "Who and why", ""].map((c) => h("th", { scope: "col" }, c)))), h("tbody", {}, rows))));
    } catch (e) { fill(box, errorBox(e)); }
  })();
  return h("section", { class: "card", id: "history" }, h("h2", {}, "History"), box);
}

function diffText(e) {
  const o = e.old_value;
  const n = e.new_value;
  if (Array.isArray(o) || Array.isArray(n)) {
    const a = (n || []).filter((x) => !(o || []).includes(x));
    const r = (o || []).filter((x) => !(n || []).includes(x));
    return h("span", {}, a.map((x) => h("ins", {}, `+${x} `)), r.map((x) => h("del", {}, `−${x} `)));
  }
  return h("span", {}, h("del", {}, show(o)), " → ", h("ins", {}, show(n)));
}

function duplicates(doc) {
  const id = doc.id;
  const box = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  (async () => {
    try {
      const d = await get(`/v1/images/${id}/duplicates`);
      if (!d.items.length) { fill(box, h("p", { class: "muted" }, "No near-duplicates found.")); return; }
      fill(box, h("ul", { class: "dupes" }, d.items.map((x) => h("li", {},
        h("div", { class: "side" },
          thumb({ ...doc, caption: "this image" }, "160px"),
          h("a", { href: `/admin/images/${x.id}` }, thumb({ id: x.id, variants: x.variants || {}, status: x.status, caption: `near-duplicate ${x.id.slice(0, 8)}` }, "160px"))),
        h("p", {}, `${x.method} distance ${Number(x.distance).toFixed(3)} · `, h("a", { href: `/admin/images/${x.id}` }, `open ${x.id.slice(0, 8)}`))))));
    } catch (e) { fill(box, errorBox(e)); }
  })();
  return h("section", { class: "card" }, h("h2", {}, "Near-duplicates, side by side"), box);
}
