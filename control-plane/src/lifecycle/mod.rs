//! The lifecycle of stored images: traffic measured at the edges, hot/cold tiering by age
//! and traffic, archive restores, and what it all costs.
//!
//! # Layout
//! - [`settings`]: `[access]`, `[tiering]`, `[prices]` as read and validated.
//! - [`access`]: the batches edges push (`POST /v1/access/batches`), checked and recorded.
//! - [`policy`]: which images go cold or come back hot, and why (the plan `flexphoto tier
//!   --dry-run` prints).
//! - [`mover`]: moving one image's objects: copy, verify, switch in one transaction, delete
//!   the old copy; safe to stop at any step and run again.
//! - [`restore`]: archive classes (Glacier, Deep Archive): ask for a restore, watch it, then
//!   move the object back hot.
//! - [`cost`]: the bill's arithmetic: actual, with a policy applied, and projected.
//! - [`report`]: the cost report from the catalog and the traffic.
//! - [`scheduler`]: the `tiering` role's pass (one process per deployment).
//! - [`history`]: storage by tier over time, a snapshot a day taken by that pass.

pub mod access;
pub mod cost;
pub mod history;
pub mod mover;
pub mod policy;
pub mod report;
pub mod restore;
pub mod scheduler;
pub mod settings;

#[cfg(test)]
mod test_world;
#[cfg(test)]
mod tests;
