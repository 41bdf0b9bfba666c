// Sign-in with an API key; the server answers with a session cookie (HttpOnly).

import { api } from "../api.js";
import { h, fill, field } from "../dom.js";

export function render(main, _params, done) {
  document.title = "Sign in · FlexPhotoDB admin";
  const key = h("input", { type: "password", name: "key", required: true, autocomplete: "current-password", spellcheck: "false" });
  const msg = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "card narrow", onsubmit: async (ev) => {
    ev.preventDefault();
    fill(msg);
    try {
      done(await api("POST", "/admin/api/session", { key: key.value.trim() }, { quiet401: true }));
    } catch (e) {
      fill(msg, h("p", { class: "error", role: "alert" }, e.status === 401 ? "That API key is not valid (or was revoked)." : e.message));
      key.focus();
    }
  } },
  h("h1", {}, "Sign in"),
  h("p", {}, "Sign in with an API key. What you can see and change follows the key's role and owner."),
  field("API key", key),
  msg,
  h("button", { type: "submit", class: "primary" }, "Sign in"));
  fill(main, form);
  key.focus();
}
