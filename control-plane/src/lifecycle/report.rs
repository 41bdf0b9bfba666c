//! The cost report `GET /v1/cost` and `flexphoto cost` show: what is stored by tier and
//! kind, what the edges served in the last 30 days, the monthly bill from those figures, and
//! the same bill with the tiering policy applied (what would move now) and its saving.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::cost::{monthly_bill, transition_cost, Bill, Delivery, Usage};
use super::policy::{self, PlanTotals};
use super::settings::{Prices, TieringConfig};
use crate::store::lifecycle::{StorageUsage, Traffic};
use crate::store::{Db, StoreError};

/// Days of traffic a monthly bill is made from.
pub const MONTH_DAYS: u32 = 30;

/// The whole report.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CostReport {
    /// When it was made.
    pub generated_at: DateTime<Utc>,
    /// Currency of every amount (the price table's).
    pub currency: String,
    /// Stored objects and bytes by tier and kind.
    pub storage: Vec<StorageUsage>,
    /// What the edges served in the last 30 days.
    pub traffic_30d: Traffic,
    /// Share of those requests the edges answered from their caches.
    pub edge_hit_ratio: Option<f64>,
    /// The usage the actual bill is computed from.
    pub usage: Usage,
    /// How images reach users (from `[prices]`).
    pub delivery: Delivery,
    /// This month's bill at the current tiers.
    pub actual: Bill,
    /// The bill with the tiering policy applied.
    pub what_if: WhatIf,
    /// The price table used.
    pub prices: Prices,
}

/// The bill if the policy moved every image it picks now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WhatIf {
    /// Images that would go cold.
    pub images_to_cold: usize,
    /// Images that would come back hot.
    pub images_to_hot: usize,
    /// Bytes that would go cold.
    pub bytes_to_cold: i64,
    /// Bytes that would come back hot.
    pub bytes_to_hot: i64,
    /// The monthly bill afterwards.
    pub bill: Bill,
    /// `actual.total - bill.total`, per month.
    pub monthly_saving: f64,
    /// One-time cost of the moves.
    pub one_time_cost: f64,
}

/// The usage behind a bill: storage by tier from the catalog, traffic and uploads of the
/// last 30 days.
pub async fn usage(
    db: &Db,
    tiering: &TieringConfig,
    now: DateTime<Utc>,
) -> Result<(Usage, Vec<StorageUsage>, Traffic), StoreError> {
    let storage = db.storage_usage().await?;
    let since = policy::window_start(now, MONTH_DAYS);
    let traffic = db.traffic_since(since).await?;
    let cold = db.cold_traffic_since(since).await?;
    let uploads = db
        .uploads_since(now - chrono::Duration::days(i64::from(MONTH_DAYS)))
        .await?;
    let objects_per_image = 1.0
        + storage
            .iter()
            .map(|s| s.kind.as_str())
            .filter(|k| *k != "original")
            .collect::<std::collections::BTreeSet<_>>()
            .len() as f64;
    let sum = |tier: &str| -> f64 {
        storage
            .iter()
            .filter(|s| s.tier == tier)
            .map(|s| s.bytes as f64)
            .sum()
    };
    // Cold reads are the edges' misses on cold images.
    let cold_misses = (cold.requests - cold.edge_hits).max(0) as f64;
    let cold_miss_bytes = if cold.requests > 0 {
        cold.bytes as f64 * cold_misses / cold.requests as f64
    } else {
        0.0
    };
    let u = Usage {
        hot_bytes: sum("standard"),
        cold_bytes: sum("cold"),
        cold_class: tiering.cold_class.clone(),
        puts: uploads as f64 * objects_per_image,
        requests: traffic.requests as f64,
        bytes_served: traffic.bytes as f64,
        edge_hits: traffic.edge_hits as f64,
        cold_reads: cold_misses,
        cold_read_bytes: cold_miss_bytes,
    };
    Ok((u, storage, traffic))
}

/// The bill of `actual` after the moves `totals` adds up, and the moves' one-time cost.
pub fn what_if(
    actual: &Usage,
    totals: &PlanTotals,
    prices: &Prices,
    delivery: Delivery,
    now_bill: &Bill,
) -> WhatIf {
    let to_cold = totals.bytes_to_cold as f64;
    let to_hot = totals.bytes_to_hot as f64;
    let after = Usage {
        hot_bytes: (actual.hot_bytes - to_cold + to_hot).max(0.0),
        cold_bytes: (actual.cold_bytes + to_cold - to_hot).max(0.0),
        ..actual.clone()
    };
    let bill = monthly_bill(&after, prices, delivery);
    WhatIf {
        images_to_cold: totals.images_to_cold.max(0) as usize,
        images_to_hot: totals.images_to_hot.max(0) as usize,
        bytes_to_cold: totals.bytes_to_cold,
        bytes_to_hot: totals.bytes_to_hot,
        monthly_saving: now_bill.total - bill.total,
        one_time_cost: transition_cost(totals.objects_to_cold as f64, to_cold, true, prices)
            + transition_cost(totals.objects_to_hot as f64, to_hot, false, prices),
        bill,
    }
}

/// The report at `now` with `tiering`'s policy (the configured one, or another to compare).
pub async fn report(
    db: &Db,
    tiering: &TieringConfig,
    prices: &Prices,
    now: DateTime<Utc>,
) -> Result<CostReport, StoreError> {
    let (usage, storage, traffic) = usage(db, tiering, now).await?;
    let delivery = Delivery {
        cdn: prices.cdn,
        cdn_hit_ratio: prices.cdn_hit_ratio,
    };
    let actual = monthly_bill(&usage, prices, delivery);
    let totals = policy::totals(db, tiering, now).await?;
    let what_if = what_if(&usage, &totals, prices, delivery, &actual);
    Ok(CostReport {
        generated_at: now,
        currency: "USD".into(),
        storage,
        edge_hit_ratio: (traffic.requests > 0)
            .then(|| traffic.edge_hits as f64 / traffic.requests as f64),
        traffic_30d: traffic,
        usage,
        delivery,
        actual,
        what_if,
        prices: *prices,
    })
}
