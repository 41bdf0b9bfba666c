// The admin UI: session check, navigation by role, and a router over /admin/… paths.

import { api, can, getSession, setSession, whenSignedOut } from "./api.js";
import { h, fill, toast } from "./dom.js";
import * as login from "./pages/login.js";
import * as library from "./pages/library.js";
import * as search from "./pages/search.js";
import * as image from "./pages/image.js";
import * as upload from "./pages/upload.js";
import * as review from "./pages/review.js";
import * as operations from "./pages/operations.js";

/** Pages: path pattern, nav label (none: not in the menu), least role, module. */
const PAGES = [
  [/^library$/, "Library", "viewer", library],
  [/^search$/, "Search", "viewer", search],
  [/^upload$/, "Upload", "uploader", upload],
  [/^review$/, "Review", "reviewer", review],
  [/^operations$/, "Operations", "admin", operations],
  [/^images\/([0-9a-f-]{36})$/, null, "viewer", image],
];

const main = document.getElementById("main");
let cleanup = null;

/** Goes to an /admin/… path without reloading. */
export function navigate(path, replace = false) {
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  route();
}

function current() {
  const p = location.pathname.replace(/^\/admin\/?/, "").replace(/\/$/, "");
  return p || "library";
}

function renderNav() {
  const s = getSession();
  document.getElementById("top").hidden = !s;
  if (!s) return;
  const here = current();
  fill(document.getElementById("nav"), PAGES.filter(([, label, role]) => label && can(role)).map(([re, label]) => {
    const path = re.source.replace(/[\^$]/g, "");
    return h("li", {}, h("a", { href: `/admin/${path}`, "aria-current": here === path ? "page" : undefined }, label));
  }));
  fill(document.getElementById("who"), `${s.name} · ${s.role}${s.owner_scope ? ` · owner ${s.owner_scope}` : ""}`);
}

async function route() {
  if (cleanup) { try { cleanup(); } catch { /* page already gone */ } cleanup = null; }
  if (!getSession()) {
    renderNav();
    login.render(main, {}, signedIn);
    return;
  }
  renderNav();
  const path = current();
  for (const [re, label, role, mod] of PAGES) {
    const m = path.match(re);
    if (!m) continue;
    if (!can(role)) {
      fill(main, h("h1", {}, "Not allowed"), h("p", {}, `This page needs the ${role} role; this key is ${getSession().role}.`));
      return;
    }
    document.title = `${label || "Image"} · FlexPhotoDB admin`;
    fill(main, h("p", { class: "muted" }, "Loading…"));
    try {
      cleanup = await mod.render(main, { match: m, query: new URLSearchParams(location.search), navigate }) || null;
    } catch (e) {
      fill(main, h("h1", {}, label || "Error"), h("p", { class: "error", role: "alert" }, e.message || String(e)));
    }
    main.focus({ preventScroll: true });
    return;
  }
  fill(main, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "/admin/library" }, "Back to the library")));
}

function signedIn(s) {
  setSession(s);
  const p = current();
  navigate(`/admin/${p === "login" ? "library" : p}${location.search}`, true);
}

// Links inside the app navigate without reloading.
document.addEventListener("click", (ev) => {
  const a = ev.target.closest && ev.target.closest("a[href^='/admin']");
  if (!a || ev.ctrlKey || ev.metaKey || ev.shiftKey || a.target) return;
  ev.preventDefault();
  navigate(a.getAttribute("href"));
});
window.addEventListener("popstate", route);

whenSignedOut(() => {
  if (!getSession()) return;
  setSession(null);
  toast("Your session ended; sign in again.", "error");
  route();
});

document.getElementById("signout").addEventListener("click", async () => {
  try { await api("DELETE", "/admin/api/session"); } catch { /* signed out anyway */ }
  setSession(null);
  route();
});

(async () => {
  try { setSession(await api("GET", "/admin/api/session", undefined, { quiet401: true })); } catch { setSession(null); }
  route();
})();
