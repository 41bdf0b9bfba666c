-- Several control-plane processes on one database (sqlite). Keep in step with the other backend.

-- Deployment-wide roles held under leases: the embedded vector index's owner and the
-- schedulers that must run once (sweeper, reconcile, re-embedding, ...). A holder renews its
-- lease; a survivor takes a role whose lease expired. Times are Unix milliseconds of the
-- database's clock, so processes on machines with skewed clocks agree.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    -- JSON: host, pid, advertised URL, process start time.
    holder_info TEXT NOT NULL,
    acquired_at INTEGER NOT NULL,
    renewed_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
