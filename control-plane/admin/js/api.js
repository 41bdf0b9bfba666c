// The API client: same-origin fetch with the session cookie; every change carries the
// session's CSRF token. Errors become ApiError with the API's code and message.

let session = null;

/** The signed-in session ({name, role, owner_scope, csrf_token, edge_url}) or null. */
export function getSession() { return session; }
export function setSession(s) { session = s; }

/** An API failure with its HTTP status, stable code and message. */
export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code || "";
    this.body = body;
  }
}

const RANK = { viewer: 0, uploader: 1, reviewer: 2, admin: 3 };

/** Whether the session's role is at least `role`. */
export function can(role) {
  return !!session && (RANK[session.role] ?? -1) >= RANK[role];
}

/** A query string from an object, leaving out empty values. */
export function qs(obj) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(obj || {})) {
    if (v === undefined || v === null || v === "") continue;
    p.set(k, Array.isArray(v) ? v.join(",") : String(v));
  }
  const s = p.toString();
  return s ? `?${s}` : "";
}

let onSignedOut = () => {};
/** Called when the API answers 401 (the session ended). */
export function whenSignedOut(f) { onSignedOut = f; }

/**
 * Calls the API. `body` is sent as JSON, or as is when it is FormData.
 * Options: `accept` (statuses that are not errors), `full` (return {status, data}).
 */
export async function api(method, path, body, opts = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET" && method !== "HEAD" && session) headers["X-CSRF-Token"] = session.csrf_token;
  let payload;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const r = await fetch(path, { method, headers, body: payload, credentials: "same-origin", signal: opts.signal });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  const ok = r.ok || (opts.accept || []).includes(r.status);
  if (!ok) {
    if (r.status === 401 && !opts.quiet401) onSignedOut();
    const e = data && data.error;
    throw new ApiError(r.status, e && e.code, (e && e.message) || r.statusText, data);
  }
  return opts.full ? { status: r.status, data } : data;
}

export const get = (path, opts) => api("GET", path, undefined, opts);
export const post = (path, body, opts) => api("POST", path, body, opts);
export const patch = (path, body, opts) => api("PATCH", path, body, opts);
export const put = (path, body, opts) => api("PUT", path, body, opts);
export const del = (path, opts) => api("DELETE", path, undefined, opts);

/** Whether the server has this API path (catalog and review routes arrive with issue 15). */
export async function hasRoute(path) {
  return !!session && Array.isArray(session.routes) && session.routes.includes(path);
}
