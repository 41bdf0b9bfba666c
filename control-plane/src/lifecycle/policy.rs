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
use crate::store::lifecycle::{Candidate, Owners, Selection};
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

/// What a full pass would move, in total (the what-if of the cost report).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct PlanTotals {
    /// Images that would go cold.
    pub images_to_cold: i64,
    /// Images that would come back hot.
    pub images_to_hot: i64,
    /// Bytes that would go cold.
    pub bytes_to_cold: i64,
    /// Bytes that would come back hot.
    pub bytes_to_hot: i64,
    /// Objects that would go cold.
    pub objects_to_cold: i64,
    /// Objects that would come back hot.
    pub objects_to_hot: i64,
}

impl PlanTotals {
    /// Counts one move.
    pub fn add(&mut self, direction: Direction, images: i64, bytes: i64, objects: i64) {
        let (i, b, o) = match direction {
            Direction::ToCold => (
                &mut self.images_to_cold,
                &mut self.bytes_to_cold,
                &mut self.objects_to_cold,
            ),
            Direction::ToHot => (
                &mut self.images_to_hot,
                &mut self.bytes_to_hot,
                &mut self.objects_to_hot,
            ),
        };
        *i += images;
        *b += bytes;
        *o += objects;
    }
}

/// Every (direction, policy, selection) a pass evaluates, cold-bound first, the default
/// policy before each owner's override.
fn selections<'a>(
    cfg: &'a TieringConfig,
    overridden: &'a [Owner],
    now: DateTime<Utc>,
) -> Vec<(Direction, &'a Policy, Selection<'a>)> {
    let mut policies: Vec<(Owners<'a>, &'a Policy)> =
        vec![(Owners::Except(overridden), &cfg.default_policy)];
    policies.extend(cfg.owners.iter().map(|(o, p)| (Owners::Only(o), p)));
    let mut out = Vec::new();
    for direction in [Direction::ToCold, Direction::ToHot] {
        for (owners, policy) in policies.iter().filter(|(_, p)| p.enabled) {
            let selection = match direction {
                Direction::ToCold => Selection::ToCold {
                    owners: owners.clone(),
                    cutoff: now - chrono::Duration::days(i64::from(policy.cold_after_days)),
                    window_start: window_start(now, policy.cold_window_days),
                    max_hits: policy.cold_max_hits,
                    kinds: &cfg.objects,
                },
                Direction::ToHot => Selection::ToHot {
                    owners: owners.clone(),
                    window_start: window_start(now, policy.rewarm_window_days),
                    min_hits: policy.rewarm_hits,
                },
            };
            out.push((direction, *policy, selection));
        }
    }
    out
}

/// A candidate as a planned move, with the rule that picked it in words.
fn planned(c: Candidate, direction: Direction, policy: &Policy, now: DateTime<Utc>) -> PlannedMove {
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
    PlannedMove {
        id: c.id,
        owner: c.owner,
        direction,
        age_days,
        hits: c.hits,
        bytes: c.bytes,
        objects: c.objects,
        reason,
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
    let mut plan = Plan::default();
    let mut taken = (0usize, Direction::ToCold);
    for (direction, policy, selection) in selections(cfg, &overridden, now) {
        if taken.1 != direction {
            taken = (0, direction);
        }
        let left = limit.map(|l| l.saturating_sub(taken.0));
        if left == Some(0) {
            plan.truncated = true;
            continue;
        }
        // One more than asked for tells whether the plan was cut short.
        let want = left.map(|l| u32::try_from(l).unwrap_or(u32::MAX - 1) + 1);
        let mut found = Vec::new();
        db.candidates(&selection, want, |c| found.push(c)).await?;
        if let Some(l) = left.filter(|l| found.len() > *l) {
            found.truncate(l);
            plan.truncated = true;
        }
        taken.0 += found.len();
        for c in found {
            let m = planned(c, direction, policy, now);
            match direction {
                Direction::ToCold => plan.to_cold_bytes += m.bytes,
                Direction::ToHot => plan.to_hot_bytes += m.bytes,
            }
            plan.moves.push(m);
        }
    }
    Ok(plan)
}

/// Every move the policy asks for at `now`, handed to `each` in plan order as the database
/// returns them (a full listing at a million images never sits in memory).
pub async fn each_move(
    db: &Db,
    cfg: &TieringConfig,
    now: DateTime<Utc>,
    mut each: impl FnMut(PlannedMove),
) -> Result<(), StoreError> {
    let overridden: Vec<Owner> = cfg.owners.keys().cloned().collect();
    for (direction, policy, selection) in selections(cfg, &overridden, now) {
        db.candidates(&selection, None, |c| {
            each(planned(c, direction, policy, now))
        })
        .await?;
    }
    Ok(())
}

/// What a full pass at `now` would move, in total, without listing the moves.
pub async fn totals(
    db: &Db,
    cfg: &TieringConfig,
    now: DateTime<Utc>,
) -> Result<PlanTotals, StoreError> {
    let overridden: Vec<Owner> = cfg.owners.keys().cloned().collect();
    let mut totals = PlanTotals::default();
    for (direction, _, selection) in selections(cfg, &overridden, now) {
        let t = db.candidate_totals(&selection).await?;
        totals.add(direction, t.images, t.bytes, t.objects);
    }
    Ok(totals)
}
