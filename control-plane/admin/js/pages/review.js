// Review queue: each image with why it is here; keyboard shortcuts (j/k or arrows to move,
// a approve, r reject, x select); bulk decisions; a clear message when another reviewer
// changed an item first (409 on a stale version).

import { get, post, patch, qs, hasRoute, getSession } from "../api.js";
import { h, fill, thumb, errorBox, toast, field, fmtDate } from "../dom.js";
import { reasonText } from "./image.js";
import { ownerChoices, pickOwner } from "./library.js";

export async function render(main, { query }) {
  const queueApi = await hasRoute("/v1/review/queue");
  const reasonSel = h("select", { name: "reason" }, ["", "validation", "near_duplicate", "low_confidence", "rights_ending", "suggested_tags", "submitted", "legacy"].map((r) => h("option", { value: r }, r ? r.replace(/_/g, " ") : "any reason")));
  reasonSel.value = query.get("reason") || "";
  const order = h("select", { name: "sort" }, h("option", { value: "oldest" }, "Longest waiting first"), h("option", { value: "priority" }, "Highest priority first"));
  order.value = query.get("sort") || "oldest";
  const note = h("input", { type: "text", name: "note", autocomplete: "off", maxLength: 2000 });
  const ownerIn = h("input", { type: "text", name: "owner", autocomplete: "off", readOnly: !!getSession().owner_scope });
  let owners = null;
  const list = h("ol", { class: "queue", "aria-label": "Images waiting for review" });
  const msg = h("div", { "aria-live": "assertive" });
  const status = h("p", { class: "muted", "aria-live": "polite" });
  let items = [];
  let cursorIdx = 0;

  async function load() {
    fill(msg);
    try {
      if (queueApi) {
        const d = await get(`/v1/review/queue${qs({ reason: reasonSel.value, sort: order.value, owner: ownerIn.value.trim(), limit: 100 })}`);
        items = d.items.map((x) => ({ id: x.id, version: x.version, caption: x.caption, thumb: x.thumb, reasons: x.reasons || [], queued_at: x.queued_at, owner: x.owner, state: x.workflow_state }));
      } else {
        if (!ownerIn.value.trim()) ownerIn.value = await pickOwner({}, owners);
        const d = await get(`/v1/images${qs({ owner: ownerIn.value.trim(), review_state: "needs_review", limit: 100, sort: "oldest" })}`);
        items = d.items.map((x) => ({ id: x.id, caption: x.caption, img: x, reasons: x.review_reason ? [{ message: x.review_reason }] : [], queued_at: x.uploaded_at, owner: x.owner, state: x.review_state }));
      }
    } catch (e) { fill(msg, errorBox(e)); items = []; }
    draw();
  }

  function draw() {
    fill(list, items.map((it, i) => {
      const box = h("input", { type: "checkbox", class: "pick", "aria-label": `Select ${it.caption || it.id}`, checked: !!it.picked, onchange: () => { it.picked = box.checked; } });
      return h("li", { class: `item${i === cursorIdx ? " current" : ""}`, tabindex: i === cursorIdx ? 0 : -1, dataset: { id: it.id }, onfocus: () => { cursorIdx = i; mark(); } },
        h("label", { class: "sel" }, box),
        h("a", { href: `/admin/images/${it.id}` }, it.img ? thumb(it.img, "120px") : it.thumb ? h("img", { src: it.thumb, alt: it.caption || `image ${it.id}`, width: 120, height: 120, loading: "lazy" }) : h("div", { class: "nothumb" }, "no preview")),
        h("div", {}, h("p", {}, h("a", { href: `/admin/images/${it.id}` }, it.caption || it.id)),
          h("p", { class: "muted" }, `${it.owner} · waiting since ${fmtDate(it.queued_at)}${it.version !== undefined ? ` · version ${it.version}` : ""}`),
          h("ul", { class: "reasons", "aria-label": "Why it is here" }, it.reasons.map((r) => h("li", {}, reasonText(r))))),
        h("div", { class: "actions" },
          h("button", { type: "button", class: "primary", onclick: () => decide("approve", [it]) }, "Approve"),
          h("button", { type: "button", class: "danger", onclick: () => decide("reject", [it]) }, "Reject")));
    }));
    fill(status, items.length ? `${items.length} waiting.` : "Nothing waiting for review.");
  }
  function mark() {
    list.querySelectorAll("li.item").forEach((li, i) => { li.classList.toggle("current", i === cursorIdx); li.tabIndex = i === cursorIdx ? 0 : -1; });
  }
  function focusCurrent() { mark(); list.children[cursorIdx]?.focus(); }

  async function decide(action, chosen) {
    if (!chosen.length) { toast("Select items first (x, or the checkboxes)."); return; }
    fill(msg);
    const reason = note.value.trim() || undefined;
    try {
      if (queueApi) {
        const r = await post("/v1/review/decisions", { action, reason, items: chosen.map((it) => ({ id: it.id, version: it.version })) }, { accept: [207, 409], full: true });
        const res = r.data.results || [];
        const stale = res.filter((x) => x.status === 409);
        const other = res.filter((x) => x.status !== 200 && x.status !== 409);
        const parts = [`${r.data.succeeded} ${action === "approve" ? "approved" : action === "reject" ? "rejected" : "done"}`];
        if (stale.length) parts.push(`${stale.length} changed by another reviewer first (${stale.map((x) => x.id.slice(0, 8)).join(", ")}): reload to see the current state before deciding again`);
        if (other.length) parts.push(`${other.length} refused (${other.map((x) => `${x.id.slice(0, 8)}: ${x.message || x.code}`).join("; ")})`);
        fill(msg, h("p", { class: stale.length || other.length ? "error conflict" : "ok", role: stale.length || other.length ? "alert" : "status" }, parts.join("; ") + "."));
        const done = new Set(res.filter((x) => x.status === 200).map((x) => x.id));
        items = items.filter((x) => !done.has(x.id));
        for (const x of stale) { const it = items.find((i) => i.id === x.id); if (it && x.version !== null) it.stale = true; }
      } else {
        for (const it of chosen) await patch(`/v1/images/${it.id}`, { review_state: action === "approve" ? "approved" : "rejected", reason });
        items = items.filter((x) => !chosen.includes(x));
        fill(msg, h("p", { class: "ok", role: "status" }, `${chosen.length} ${action}d.`));
      }
    } catch (e) {
      fill(msg, e.status === 409 ? h("p", { class: "error conflict", role: "alert" }, `Another reviewer changed this first: ${e.message}. Reload the queue.`) : errorBox(e));
    }
    cursorIdx = Math.min(cursorIdx, Math.max(items.length - 1, 0));
    draw();
    focusCurrent();
  }

  function onKey(ev) {
    if (ev.target.matches("input[type=text], textarea, select") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const it = items[cursorIdx];
    const k = ev.key;
    if (k === "j" || k === "ArrowDown") { cursorIdx = Math.min(cursorIdx + 1, items.length - 1); focusCurrent(); }
    else if (k === "k" || k === "ArrowUp") { cursorIdx = Math.max(cursorIdx - 1, 0); focusCurrent(); }
    else if (k === "a" && it) decide("approve", [it]);
    else if (k === "r" && it) decide("reject", [it]);
    else if (k === "x" && it) { it.picked = !it.picked; draw(); focusCurrent(); }
    else return;
    ev.preventDefault();
  }
  document.addEventListener("keydown", onKey);

  const picked = () => items.filter((x) => x.picked);
  fill(main, h("h1", {}, "Review queue"),
    h("form", { class: "toolbar", onsubmit: (ev) => { ev.preventDefault(); history.replaceState(null, "", `/admin/review${qs({ owner: ownerIn.value.trim(), reason: reasonSel.value, sort: order.value })}`); load(); } },
      h("div", { class: "row" }, field("Owner", ownerIn), queueApi ? [field("Reason", reasonSel), field("Order", order)] : null, field("Note for the history (optional)", note), h("button", { type: "submit" }, "Reload"))),
    h("p", { class: "muted", id: "shortcuts" }, "Keys: j / ↓ next, k / ↑ previous, a approve, r reject, x select."),
    h("div", { class: "row bulk" },
      h("button", { type: "button", onclick: () => { items.forEach((x) => { x.picked = true; }); draw(); } }, "Select all"),
      h("button", { type: "button", class: "primary", onclick: () => decide("approve", picked()) }, "Approve selected"),
      h("button", { type: "button", class: "danger", onclick: () => decide("reject", picked()) }, "Reject selected")),
    msg, status, list);
  ownerIn.value = query.get("owner") || getSession().owner_scope || "";
  owners = ownerChoices(ownerIn);
  await load();
  return () => document.removeEventListener("keydown", onKey);
}
