// Upload: many files by drag and drop or the file input, each sent straight to storage with
// the presigned flow (create → PUT with progress → complete), then followed until it is
// ready or failed (with the reason).

import { post, get, getSession } from "../api.js";
import { h, fill, field, fmtBytes } from "../dom.js";
import { dropTarget } from "./search.js";
import { ownerChoices } from "./library.js";

const PARALLEL = 3;

export async function render(main) {
  const s = getSession();
  const owner = h("input", { type: "text", name: "owner", required: true, value: s.owner_scope || localStorage.getItem("fp-owner") || "", readOnly: !!s.owner_scope, autocomplete: "off" });
  const caption = h("input", { type: "text", name: "caption", maxLength: 2000, autocomplete: "off" });
  const input = h("input", { type: "file", id: "upload-files", name: "files", multiple: true, accept: "image/*", class: "visually-hidden" });
  const list = h("ol", { class: "uploads", "aria-label": "Files" });
  const summary = h("p", { "aria-live": "polite", class: "muted" });
  const zone = h("div", { class: "dropzone big" },
    h("p", {}, "Drop photos here, or ", h("label", { for: "upload-files", class: "linklike" }, "choose files"), "."),
    input);
  const queue = [];
  let active = 0;
  const rows = [];
  function add(files) {
    if (!owner.value.trim()) { owner.focus(); fill(summary, h("span", { class: "error", role: "alert" }, "Enter the owner first.")); return; }
    localStorage.setItem("fp-owner", owner.value.trim());
    for (const f of files) {
      const row = uploadRow(f);
      rows.push(row);
      list.append(row.el);
      queue.push(() => send(f, row, owner.value.trim(), caption.value.trim()));
    }
    pump();
  }
  function pump() {
    while (active < PARALLEL && queue.length) {
      active++;
      queue.shift()().finally(() => { active--; pump(); tally(); });
    }
    tally();
  }
  function tally() {
    const by = {};
    for (const r of rows) by[r.state] = (by[r.state] || 0) + 1;
    fill(summary, Object.entries(by).map(([k, n]) => `${n} ${k}`).join(", "));
  }
  input.addEventListener("change", () => { add([...input.files]); input.value = ""; });
  dropTarget(zone, add);
  fill(main, h("h1", {}, "Upload"),
    h("div", { class: "card" }, field("Owner", owner, s.owner_scope ? "Your key is limited to this owner." : "Whose library the photos go to."), field("Caption for these photos (optional)", caption), zone),
    summary, list);
  if (!s.owner_scope) ownerChoices(owner);
}

function uploadRow(f) {
  const bar = h("progress", { max: 100, value: 0, "aria-label": `Upload progress of ${f.name}` });
  const status = h("span", { class: "status" }, "waiting");
  const link = h("span");
  const el = h("li", { class: "upload" }, h("span", { class: "name" }, f.name), h("span", { class: "muted" }, fmtBytes(f.size)), bar, status, link);
  const row = {
    el, state: "waiting",
    set(state, text, kind) {
      row.state = state;
      status.textContent = text || state;
      status.className = `status ${kind || state}`;
      el.dataset.state = state;
    },
    progress(p) { bar.value = p; },
    link(id) { fill(link, h("a", { href: `/admin/images/${id}` }, "open")); },
  };
  return row;
}

async function send(file, row, owner, caption) {
  try {
    row.set("uploading", "starting");
    const created = await post("/v1/images", { owner, content_type: file.type || "application/octet-stream", size: file.size, caption: caption || undefined });
    row.link(created.id);
    await putWithProgress(created.upload, file, (p) => { row.progress(p); row.set("uploading", `uploading ${p}%`); });
    row.set("processing", "processing");
    await post(`/v1/images/${created.id}/complete`);
    for (let i = 0; ; i++) {
      const img = await get(`/v1/images/${created.id}`);
      if (img.status === "ready") { row.progress(100); row.set("ready", "ready", "ok"); return; }
      if (img.status === "failed") { row.set("failed", `failed: ${img.error || "unknown reason"}`, "error"); return; }
      row.set(img.status, img.status);
      await new Promise((r) => setTimeout(r, Math.min(500 + i * 250, 3000)));
    }
  } catch (e) {
    row.set("failed", `failed: ${e.message}${e.status ? ` (${e.status})` : ""}`, "error");
  }
}

function putWithProgress(upload, file, onProgress) {
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest();
    x.open(upload.method || "PUT", upload.url);
    for (const [k, v] of Object.entries(upload.headers || {})) {
      if (!["host", "content-length"].includes(k.toLowerCase())) x.setRequestHeader(k, v);
    }
    x.upload.onprogress = (ev) => ev.lengthComputable && onProgress(Math.round((ev.loaded / ev.total) * 100));
    x.onload = () => {
      if (x.status >= 200 && x.status < 300) { onProgress(100); resolve(); return; }
      let msg = x.statusText;
      try { msg = JSON.parse(x.responseText).error.message; } catch { /* S3 answers XML */ }
      reject(new Error(`storage refused the upload: ${msg} (${x.status})`));
    };
    x.onerror = () => reject(new Error("the upload could not reach storage (network or CORS)"));
    x.send(file);
  });
}
