// Library: the thumbnail grid with every listing filter, sort, keyset pages ("Load more",
// and automatically when the end of the grid scrolls into view), selection and bulk actions.

import { get, patch, del, qs, can, hasRoute, getSession } from "../api.js";
import { h, fill, thumb, toast, errorBox, field } from "../dom.js";
import { filterForm, CATALOG_FILTERS } from "../filters.js";

/** The owners with images (for the owner field's suggestions). */
export function ownerChoices(input) {
  const list = h("datalist", { id: `owners-${Math.random().toString(36).slice(2, 7)}` });
  input.setAttribute("list", list.id);
  input.after(list);
  const p = get("/v1/owners").then((d) => {
    fill(list, d.items.map((o) => h("option", { value: o.owner }, `${o.owner} (${o.images})`)));
    return d.items;
  }).catch(() => []);
  return p;
}

/** The owner to show: the URL's, the key's scope, the last one used, else the first one. */
export async function pickOwner(values, owners) {
  const s = getSession();
  if (values.owner) return values.owner;
  if (s.owner_scope) return s.owner_scope;
  const last = localStorage.getItem("fp-owner");
  if (last) return last;
  const list = await owners;
  return list.length ? list[0].owner : "";
}

export async function render(main, { query, navigate }) {
  const values = Object.fromEntries(query.entries());
  const catalog = await hasRoute("/v1/collections");
  const filters = filterForm(values, { extra: catalog ? CATALOG_FILTERS : [] });
  const ownerInput = filters.el.querySelector("input[name=owner]");
  const owners = ownerChoices(ownerInput);
  values.owner = await pickOwner(values, owners);
  ownerInput.value = values.owner;
  if (values.owner) localStorage.setItem("fp-owner", values.owner);
  const sort = h("select", { name: "sort" }, h("option", { value: "newest" }, "Newest first"), h("option", { value: "oldest" }, "Oldest first"));
  sort.value = values.sort || "newest";
  const limit = h("select", { name: "limit" }, [24, 48, 96, 200].map((n) => h("option", { value: n }, `${n} per page`)));
  limit.value = values.limit || "48";
  const form = h("form", { class: "toolbar", onsubmit: (ev) => {
    ev.preventDefault();
    navigate(`/admin/library${qs({ ...filters.read(), sort: sort.value, limit: limit.value })}`);
  } }, h("details", { open: Object.keys(values).some((k) => !["sort", "limit", "owner"].includes(k)) || undefined }, h("summary", {}, "Filters"), filters.el),
  h("div", { class: "row" }, field("Sort", sort), field("Page size", limit), h("button", { type: "submit", class: "primary" }, "Apply")));

  const grid = h("ul", { class: "grid", "aria-label": "Images" });
  const status = h("p", { class: "muted", "aria-live": "polite" });
  const more = h("button", { type: "button", hidden: true }, "Load more");
  const selected = new Set();
  const selCount = h("span", {}, "0 selected");
  const bulk = bulkBar(selected, selCount, () => reload());
  fill(main, h("h1", {}, "Library", values.owner ? h("span", { class: "muted" }, ` · ${values.owner}`) : null), form, bulk, status, grid, h("div", { class: "center" }, more));

  const params = { ...filters.read(), sort: sort.value, limit: limit.value };
  if (!params.owner) {
    fill(status, "No images yet: ", h("a", { href: "/admin/upload" }, "upload some"), ".");
    document.body.dataset.libraryReady = "1";
    return null;
  }
  let cursor = null;
  let loading = false;
  let first = true;
  let shown = 0;

  async function page() {
    if (loading) return;
    loading = true;
    more.disabled = true;
    try {
      const data = await get(`/v1/images${qs({ ...params, cursor })}`);
      for (const img of data.items) grid.append(card(img, selected, selCount));
      shown += data.items.length;
      cursor = data.next_cursor;
      more.hidden = !cursor;
      fill(status, shown ? `${shown} image${shown === 1 ? "" : "s"} shown${cursor ? "; more below" : ""}.` : "No images match these filters.");
      if (first) {
        first = false;
        // The first screen is on the page: record it for the performance test.
        requestAnimationFrame(() => requestAnimationFrame(() => {
          performance.mark("library-first-screen");
          document.body.dataset.libraryReady = "1";
        }));
      }
    } catch (e) {
      fill(status, errorBox(e));
    } finally {
      loading = false;
      more.disabled = false;
    }
  }
  async function reload() {
    selected.clear();
    selCount.textContent = "0 selected";
    grid.replaceChildren();
    cursor = null;
    shown = 0;
    await page();
  }
  more.addEventListener("click", page);
  const io = new IntersectionObserver((es) => { if (es.some((e) => e.isIntersecting) && cursor) page(); }, { rootMargin: "400px" });
  io.observe(more);
  await page();
  return () => io.disconnect();
}

function card(img, selected, selCount) {
  const box = h("input", { type: "checkbox", "aria-label": `Select ${img.caption || img.id}`, onchange: () => {
    if (box.checked) selected.add(img.id); else selected.delete(img.id);
    selCount.textContent = `${selected.size} selected`;
  } });
  return h("li", { class: "tile" },
    h("a", { href: `/admin/images/${img.id}` }, thumb(img)),
    h("div", { class: "tile-meta" },
      h("label", { class: "sel" }, box),
      h("span", { class: `badge ${img.status}` }, img.status),
      img.review_state && img.review_state !== "unreviewed" ? h("span", { class: `badge ${img.review_state}` }, img.review_state.replace(/_/g, " ")) : null,
      img.storage_tier === "cold" ? h("span", { class: "badge cold" }, "cold") : null),
    h("p", { class: "caption" }, img.caption || img.owner));
}

/** Bulk actions on the selection: add a tag, set the review state, delete. */
function bulkBar(selected, selCount, done) {
  const tag = h("input", { type: "text", name: "bulk-tag", autocomplete: "off" });
  const state = h("select", { name: "bulk-review" }, ["approved", "rejected", "needs_review"].map((s) => h("option", { value: s }, s.replace(/_/g, " "))));
  const msg = h("div", { "aria-live": "polite" });
  async function each(label, f) {
    if (!selected.size) { toast("Select images first."); return; }
    let ok = 0;
    const failed = [];
    for (const id of selected) {
      try { await f(id); ok++; } catch (e) { failed.push(`${id.slice(0, 8)}: ${e.message}`); }
    }
    fill(msg, h("p", { class: failed.length ? "error" : "ok", role: failed.length ? "alert" : undefined }, `${label}: ${ok} done${failed.length ? `, ${failed.length} failed (${failed.join("; ")})` : ""}.`));
    done();
  }
  const canEdit = can("uploader");
  return h("section", { class: "bulk", "aria-label": "Bulk actions" },
    selCount,
    canEdit ? [
      field("Add tag", tag),
      h("button", { type: "button", onclick: () => tag.value.trim() && each("Tag added", async (id) => {
        const img = await get(`/v1/images/${id}`);
        if (!img.tags.includes(tag.value.trim())) await patch(`/v1/images/${id}`, { tags: [...img.tags, tag.value.trim()] });
      }) }, "Add tag"),
      field("Review state", state),
      h("button", { type: "button", onclick: () => each("Review state set", (id) => patch(`/v1/images/${id}`, { review_state: state.value, reason: "bulk action in the admin UI" })) }, "Set state"),
      h("button", { type: "button", class: "danger", onclick: () => confirm(`Delete ${selected.size} image(s)?`) && each("Deleted", (id) => del(`/v1/images/${id}`)) }, "Delete"),
    ] : h("span", { class: "muted" }, "Your role may only view."),
    msg);
}
