-- Sessions of the admin web UI (/admin): one row per signed-in browser, so that every
-- control-plane process on this database accepts the cookie. Only the SHA-256 of the
-- cookie's secret is stored; the session acts with its API key's role and scope, and ends
-- when the key is revoked.
CREATE TABLE admin_sessions (
    id_hash     TEXT PRIMARY KEY,
    key_id      BLOB NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    csrf_token  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
CREATE INDEX admin_sessions_expires ON admin_sessions (expires_at);
