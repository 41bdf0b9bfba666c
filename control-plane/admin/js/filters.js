// The filters listing and search share, as one form. Each entry names the API parameter;
// the catalog's filters (collection, rights, workflow) are added when the server has them.

import { h, field, dayToRfc3339 } from "./dom.js";

const STATUS = ["", "uploading", "processing", "ready", "failed"];
const REVIEW = ["", "unreviewed", "needs_review", "approved", "rejected"];
const TIER = ["", "standard", "cold"];

/** Filters: [param, label, kind, options]. kind: text | select | day | number. */
export const FILTERS = [
  ["owner", "Owner", "text"],
  ["tags", "Tags (comma-separated, all must match)", "text"],
  ["camera_make", "Camera make", "text"],
  ["camera_model", "Camera model", "text"],
  ["uploaded_after", "Uploaded on or after", "day"],
  ["uploaded_before", "Uploaded before", "day"],
  ["status", "Status", "select", STATUS],
  ["review_state", "Review state", "select", REVIEW],
  ["storage_tier", "Storage tier", "select", TIER, { listOnly: true }],
  ["not_accessed_since", "Not viewed since", "day", null, { listOnly: true }],
  ["max_hits_30d", "Fewer than N views in 30 days", "number", null, { listOnly: true }],
];

/** Catalog filters (collections, vocabularies, workflow, rights); shown when the server has them. */
export const CATALOG_FILTERS = [
  ["collection", "Collection (id or name)", "text"],
  ["terms", "Vocabulary terms (comma-separated)", "text"],
  ["workflow_state", "Workflow state", "select", ["", "draft", "in_review", "changes_requested", "approved", "published", "rejected", "withdrawn"]],
  ["rights", "Rights", "select", ["", "usable", "withheld", "any"]],
  ["versions", "Versions", "select", ["", "current", "all"]],
  ["fields", "Field conditions (e.g. usage=editorial;shots>=5)", "text"],
  ["reason", "In review for", "select", ["", "validation", "near_duplicate", "low_confidence", "rights_ending", "suggested_tags", "submitted", "legacy"]],
];

/**
 * A filter form. `values` pre-fills it (e.g. from the URL); `opts.search` leaves out the
 * listing-only filters; `opts.extra` adds filters. Returns {el, read()}.
 */
export function filterForm(values, opts = {}) {
  const list = FILTERS.concat(opts.extra || []).filter(([, , , , o]) => !(opts.search && o && o.listOnly));
  const inputs = {};
  const fields = list.map(([name, label, kind, options]) => {
    let input;
    if (kind === "select") {
      input = h("select", { name }, options.map((o) => h("option", { value: o }, o ? o.replace(/_/g, " ") : "any")));
    } else {
      input = h("input", { name, type: kind === "day" ? "date" : kind === "number" ? "number" : "text", min: kind === "number" ? 1 : undefined, autocomplete: "off" });
    }
    const v = values[name];
    if (v) input.value = kind === "day" ? String(v).slice(0, 10) : v;
    inputs[name] = [input, kind];
    return field(label, input);
  });
  const el = h("fieldset", { class: "filters" }, h("legend", {}, "Filters"), fields);
  return {
    el,
    /** The filters as API parameters (dates as RFC 3339). */
    read() {
      const out = {};
      for (const [name, [input, kind]] of Object.entries(inputs)) {
        const v = input.value.trim();
        if (!v) continue;
        out[name] = kind === "day" ? dayToRfc3339(v) : kind === "number" ? Number(v) : v;
      }
      return out;
    },
  };
}
