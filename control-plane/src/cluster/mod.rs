//! Several control-plane processes on one database: who this process is, the roles that must
//! run once per deployment, and the embedded vector index's single owner.
//!
//! Coordination lives in the database (leases, see `store::leases`), never in files or a
//! home-made protocol: any process can take a role whose holder stopped renewing it.
//!
//! # Layout
//! - [`singleton`]: the schedulers (sweeper, reconcile, re-embedding …) each run by one
//!   process at a time, with fail-over.
//! - [`index_owner`]: the embedded index belongs to one process per database; others refuse
//!   to start with it, or forward searches to the owner ([`forward`]).

pub mod forward;
pub mod index_owner;
pub mod singleton;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// This process as the other processes and the operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Instance {
    /// Unique per process start.
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// Where the other processes reach its API.
    pub url: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

impl Instance {
    /// This process, reachable at `url`.
    pub fn current(url: &str) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown".into());
        Self {
            id: uuid::Uuid::new_v4().simple().to_string(),
            host,
            pid: std::process::id(),
            url: url.trim_end_matches('/').to_owned(),
            started_at: crate::store::now(),
        }
    }

    /// The description stored with a lease.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// A holder description read back from a lease (`None` when it is not one).
    pub fn from_json(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// A role that exactly one process of a deployment holds at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Owns the embedded vector index (writes and answers searches).
    IndexOwner,
    /// Completes or fails presigned uploads that were never completed.
    Sweeper,
    /// Compares SQL and the vector index and repairs drift.
    Reconcile,
    /// Queues re-embedding after a model change.
    Reembed,
    /// Applies rights windows, publishes the withheld list, purges withheld images
    /// (`catalog::scheduler`).
    Rights,
    /// Re-validates images after a schema change (`catalog::scheduler`).
    Revalidate,
    /// Applies the tiering policy, follows restores, prunes old traffic.
    Tiering,
}

impl Role {
    /// Every role, for listings and metrics.
    pub const ALL: [Role; 7] = [
        Role::IndexOwner,
        Role::Sweeper,
        Role::Reconcile,
        Role::Reembed,
        Role::Rights,
        Role::Revalidate,
        Role::Tiering,
    ];

    /// The lease name and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::IndexOwner => "index-owner",
            Role::Sweeper => "sweeper",
            Role::Reconcile => "reconcile",
            Role::Reembed => "reembed",
            Role::Rights => "rights",
            Role::Revalidate => "revalidate",
            Role::Tiering => "tiering",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
