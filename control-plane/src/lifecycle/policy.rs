//! Which images change tier, and why. Deterministic: the same catalog, traffic and clock give
//! the same plan. An image goes cold when it is older than `cold_after_days` and had fewer
//! than `cold_max_hits` requests in the last `cold_window_days`; a cold image comes back hot
//! after `rewarm_hits` requests in the last `rewarm_window_days`. Owners may override any of
//! these (`[[tiering.owners]]`). Only the objects `tiering.objects` names move.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::settings::{Policy, TieringConfig};
use crate::domain::{ImageId, Owner};
use crate::store::lifecycle::{Candidate, Owners};
use crate::store::{Db, StoreError};

/// Which way an image moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Hot to cold.
    ToCold,
    /// Cold to hot.
    ToHot,
}

/// One image the policy would move, with the facts that decided it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PlannedMove {
    /// The image.
    #[schema(value_type = String, format = Uuid)]
    pub id: ImageId,
    /// Its owner.
    #[schema(value_type = String)]
    pub owner: Owner,
    /// Which way.
    pub direction: Direction,
    /// Days since upload.
    pub age_days: i64,
    /// Requests in the window the rule looks at.
    pub hits: i64,
    /// Bytes that would move (objects of known size).
    pub bytes: i64,
    /// Objects that would move.
    pub objects: i64,
    /// The rule, in words.
    pub reason: String,
}

/// What a pass would do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Plan {
    /// The moves, cold-bound first, each in image id order.
    pub moves: Vec<PlannedMove>,
    /// Bytes that would go cold.
    pub to_cold_bytes: i64,
    /// Bytes that would come back hot.
    pub to_hot_bytes: i64,
    /// Whether `limit` cut the plan short (more images qualify).
    pub truncated: bool,
}

/// The first day of a window of `days` days ending today (inclusive).
pub fn window_start(now: DateTime<Utc>, days: u32) -> NaiveDate {
    now.date_naive() - chrono::Duration::days(i64::from(days.max(1)) - 1)
}

fn owners_of<'a>(policy_owner: Option<&'a Owner>, overridden: &'a [Owner]) -> Owners<'a> {
    match policy_owner {
        Some(o) => Owners::Only(o),
        None => Owners::Except(overridden),
    }
}

/// Every candidate of one direction for one policy, paged by id; at most `limit` when given.
async fn collect(
    db: &Db,
    cfg: &TieringConfig,
    policy: &Policy,
    owners: Owners<'_>,
    direction: Direction,
    now: DateTime<Utc>,
    limit: Option<usize>,
) -> Result<(Vec<PlannedMove>, bool), StoreError> {
    const PAGE: u32 = 5000;
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let want = limit.map_or(PAGE, |l| PAGE.min((l - out.len()) as u32 + 1));
        let page: Vec<Candidate> = match direction {
            Direction::ToCold => {
                db.cold_candidates(
                    owners.clone(),
                    now - chrono::Duration::days(i64::from(policy.cold_after_days)),
                    window_start(now, policy.cold_window_days),
                    policy.cold_max_hits,
                    &cfg.objects,
                    after,
                    want,
                )
                .await?
            }
            Direction::ToHot => {
                db.rewarm_candidates(
                    owners.clone(),
                    window_start(now, policy.rewarm_window_days),
                    policy.rewarm_hits,
                    after,
                    want,
                )
                .await?
            }
        };
        let full = page.len() as u32 == want;
        after = page.last().map(|c| c.id);
        for c in page {
            if limit.is_some_and(|l| out.len() >= l) {
                return Ok((out, true));
            }
            let age_days = (now - c.uploaded_at).num_days();
            let reason = match direction {
                Direction::ToCold => format!(
                    "uploaded {age_days} days ago with {} requests in the last {} days \
                     (goes cold after {} days with fewer than {})",
                    c.hits, policy.cold_window_days, policy.cold_after_days, policy.cold_max_hits
                ),
                Direction::ToHot => format!(
                    "{} requests in the last {} days (comes back hot at {})",
                    c.hits, policy.rewarm_window_days, policy.rewarm_hits
                ),
            };
            out.push(PlannedMove {
                id: c.id,
                owner: c.owner,
                direction,
                age_days,
                hits: c.hits,
                bytes: c.bytes,
                objects: c.objects,
                reason,
            });
        }
        if !full {
            return Ok((out, false));
        }
    }
}

/// The moves the policy asks for at `now`: every one, or at most `limit` per direction.
pub async fn plan(
    db: &Db,
    cfg: &TieringConfig,
    now: DateTime<Utc>,
    limit: Option<usize>,
) -> Result<Plan, StoreError> {
    let overridden: Vec<Owner> = cfg.owners.keys().cloned().collect();
    let mut policies: Vec<(Option<&Owner>, &Policy)> = vec![(None, &cfg.default_policy)];
    policies.extend(cfg.owners.iter().map(|(o, p)| (Some(o), p)));
    let mut plan = Plan::default();
    for direction in [Direction::ToCold, Direction::ToHot] {
        let mut moves = Vec::new();
        for (owner, policy) in &policies {
            if !policy.enabled {
                continue;
            }
            let left = limit.map(|l| l.saturating_sub(moves.len()));
            if left == Some(0) {
                plan.truncated = true;
                break;
            }
            let (found, cut) = collect(
                db,
                cfg,
                policy,
                owners_of(*owner, &overridden),
                direction,
                now,
                left,
            )
            .await?;
            plan.truncated |= cut;
            moves.extend(found);
        }
        for m in &moves {
            match direction {
                Direction::ToCold => plan.to_cold_bytes += m.bytes,
                Direction::ToHot => plan.to_hot_bytes += m.bytes,
            }
        }
        plan.moves.extend(moves);
    }
    Ok(plan)
}
