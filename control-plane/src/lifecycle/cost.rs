//! What storage and delivery cost per month, line by line, from a price table
//! (`[prices]`): the actual bill from the catalog and the edges' traffic, the same bill with
//! a tiering policy applied, and a projection month by month for planning. Pure arithmetic:
//! the inputs are gathered elsewhere, so every figure can be checked by hand. Sizes are in
//! decimal gigabytes (10^9 bytes), as cloud bills count them.
//!
//! Delivery model. Without a CDN, every byte the edges send is internet egress. With a CDN
//! whose hit ratio is `h`, the edges only see the CDN's misses: users received `1/(1-h)`
//! times what the edges sent, billed at the CDN's rates, and the edges' own traffic to the
//! CDN costs `origin_to_cdn_gb`. Requests the edges answer from their caches cost nothing
//! more; the others read the origin (a GET, plus a retrieval fee for cold objects).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::settings::Prices;

/// Bytes in a (decimal) gigabyte.
pub const GB: f64 = 1e9;

/// One line of a bill.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LineItem {
    /// What is billed.
    pub item: String,
    /// How much of it.
    pub quantity: f64,
    /// The unit of `quantity` and `unit_price`.
    pub unit: String,
    /// Price per unit.
    pub unit_price: f64,
    /// `quantity × unit_price`, per month.
    pub monthly: f64,
}

/// A monthly bill.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Bill {
    /// The lines, storage first.
    pub items: Vec<LineItem>,
    /// Their sum.
    pub total: f64,
}

impl Bill {
    fn from_items(items: Vec<LineItem>) -> Self {
        let total = items.iter().map(|i| i.monthly).sum();
        Self { items, total }
    }

    /// The amount of the line named `item` (0 when absent).
    pub fn line(&self, item: &str) -> f64 {
        self.items
            .iter()
            .filter(|i| i.item == item)
            .map(|i| i.monthly)
            .sum()
    }
}

fn line(item: &str, quantity: f64, unit: &str, unit_price: f64, per: f64) -> LineItem {
    LineItem {
        item: item.into(),
        quantity,
        unit: unit.into(),
        unit_price,
        monthly: quantity / per * unit_price,
    }
}

/// What is stored and served in a month.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    /// Bytes stored hot (S3 Standard).
    pub hot_bytes: f64,
    /// Bytes stored cold.
    pub cold_bytes: f64,
    /// The storage class cold bytes are priced as.
    pub cold_class: String,
    /// Objects written in the month (originals and variants).
    pub puts: f64,
    /// Requests the edges answered.
    pub requests: f64,
    /// Bytes the edges sent.
    pub bytes_served: f64,
    /// Requests the edges answered from their caches.
    pub edge_hits: f64,
    /// Origin reads that hit cold objects.
    pub cold_reads: f64,
    /// Bytes of those reads.
    pub cold_read_bytes: f64,
}

/// How images reach users.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    /// A CDN in front of the edges.
    pub cdn: bool,
    /// The CDN's hit ratio (0 to below 1).
    pub cdn_hit_ratio: f64,
}

/// The monthly bill of `u` at prices `p`.
pub fn monthly_bill(u: &Usage, p: &Prices, d: Delivery) -> Bill {
    let mut items = vec![
        line(
            "storage, hot (STANDARD)",
            u.hot_bytes / GB,
            "GB-month",
            p.standard_gb_month,
            1.0,
        ),
        line(
            &format!("storage, cold ({})", u.cold_class),
            u.cold_bytes / GB,
            "GB-month",
            p.storage_gb_month(&u.cold_class),
            1.0,
        ),
        line(
            "PUT requests",
            u.puts,
            "1,000 requests",
            p.put_per_1000,
            1000.0,
        ),
    ];
    let origin_reads = (u.requests - u.edge_hits).max(0.0);
    let hot_reads = (origin_reads - u.cold_reads).max(0.0);
    items.push(line(
        "GET requests, hot",
        hot_reads,
        "1,000 requests",
        p.get_per_1000,
        1000.0,
    ));
    items.push(line(
        "GET requests, cold",
        u.cold_reads,
        "1,000 requests",
        p.cold_get_per_1000,
        1000.0,
    ));
    items.push(line(
        "retrieval, cold",
        u.cold_read_bytes / GB,
        "GB",
        p.cold_retrieval_gb,
        1.0,
    ));
    if d.cdn {
        let reach = 1.0 / (1.0 - d.cdn_hit_ratio.clamp(0.0, 0.999));
        items.push(line(
            "CDN egress",
            u.bytes_served * reach / GB,
            "GB",
            p.cdn_egress_gb,
            1.0,
        ));
        items.push(line(
            "CDN requests",
            u.requests * reach,
            "10,000 requests",
            p.cdn_requests_per_10000,
            10_000.0,
        ));
        items.push(line(
            "edges to CDN",
            u.bytes_served / GB,
            "GB",
            p.origin_to_cdn_gb,
            1.0,
        ));
    } else {
        items.push(line(
            "internet egress",
            u.bytes_served / GB,
            "GB",
            p.egress_gb,
            1.0,
        ));
    }
    Bill::from_items(items)
}

/// One-time cost of moving `objects` objects (`bytes` bytes) between tiers: the writes
/// into the target class, plus retrieval when reading from a cold class.
pub fn transition_cost(objects: f64, bytes: f64, to_cold: bool, p: &Prices) -> f64 {
    if to_cold {
        objects / 1000.0 * p.cold_put_per_1000
    } else {
        objects / 1000.0 * p.put_per_1000 + bytes / GB * p.cold_retrieval_gb
    }
}

/// Inputs of a projection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectionInput {
    /// Images uploaded per day.
    pub daily_uploads: f64,
    /// Average original size, MB (10^6 bytes).
    pub avg_original_mb: f64,
    /// Variants kept per image, MB in all.
    pub variants_mb: f64,
    /// Variant objects per image.
    pub variants_per_image: f64,
    /// Storage class of the originals (`STANDARD`, `STANDARD_IA`, `GLACIER_IR` …).
    pub originals_class: String,
    /// Views per uploaded image, in the month it is uploaded.
    pub views_per_upload: f64,
    /// Average bytes per view, KB (10^3 bytes).
    pub avg_view_kb: f64,
    /// Share of requests the edges answer from their caches (0 to 1).
    pub edge_hit_ratio: f64,
    /// A CDN in front of the edges.
    pub cdn: bool,
    /// The CDN's hit ratio.
    pub cdn_hit_ratio: f64,
    /// Already stored when the projection starts, GB.
    pub start_gb: f64,
    /// Months to project (1 to 120).
    pub months: u32,
}

impl Default for ProjectionInput {
    fn default() -> Self {
        Self {
            daily_uploads: 1000.0,
            avg_original_mb: 4.0,
            variants_mb: 0.5,
            variants_per_image: 3.0,
            originals_class: "STANDARD".into(),
            views_per_upload: 50.0,
            avg_view_kb: 150.0,
            edge_hit_ratio: 0.8,
            cdn: false,
            cdn_hit_ratio: 0.9,
            start_gb: 0.0,
            months: 12,
        }
    }
}

/// One projected month.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct MonthProjection {
    /// 1 for the first month.
    pub month: u32,
    /// Stored at the end of the month, GB (originals and variants).
    pub stored_gb: f64,
    /// Images uploaded in the month.
    pub uploads: f64,
    /// Views in the month.
    pub views: f64,
    /// Bytes served to users, GB.
    pub served_gb: f64,
    /// The month's bill (storage at the month's end).
    pub bill: Bill,
}

/// Why a projection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProjectionError(pub String);

impl ProjectionInput {
    /// Checks the inputs.
    pub fn check(&self) -> Result<(), ProjectionError> {
        let nums = [
            ("daily_uploads", self.daily_uploads),
            ("avg_original_mb", self.avg_original_mb),
            ("variants_mb", self.variants_mb),
            ("variants_per_image", self.variants_per_image),
            ("views_per_upload", self.views_per_upload),
            ("avg_view_kb", self.avg_view_kb),
            ("start_gb", self.start_gb),
        ];
        for (k, v) in nums {
            if !v.is_finite() || v < 0.0 {
                return Err(ProjectionError(format!("{k} must be a number >= 0")));
            }
        }
        for (k, v) in [
            ("edge_hit_ratio", self.edge_hit_ratio),
            ("cdn_hit_ratio", self.cdn_hit_ratio),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(ProjectionError(format!(
                    "{k} must be at least 0 and below 1"
                )));
            }
        }
        if !(1..=120).contains(&self.months) {
            return Err(ProjectionError("months must be between 1 and 120".into()));
        }
        Ok(())
    }
}

/// The bill month by month for `input` at prices `p`.
pub fn project(
    input: &ProjectionInput,
    p: &Prices,
) -> Result<Vec<MonthProjection>, ProjectionError> {
    input.check()?;
    let uploads = input.daily_uploads * 30.0;
    let mut originals_gb = input.start_gb;
    let mut variants_gb = 0.0;
    let mut out = Vec::new();
    for month in 1..=input.months {
        originals_gb += uploads * input.avg_original_mb * 1e6 / GB;
        variants_gb += uploads * input.variants_mb * 1e6 / GB;
        let views = uploads * input.views_per_upload;
        let served = views * input.avg_view_kb * 1e3;
        // Originals in a class of their own are billed as "cold" storage here.
        let (hot, cold) = if input.originals_class == "STANDARD" {
            (originals_gb + variants_gb, 0.0)
        } else {
            (variants_gb, originals_gb)
        };
        let usage = Usage {
            hot_bytes: hot * GB,
            cold_bytes: cold * GB,
            cold_class: input.originals_class.clone(),
            puts: uploads * (1.0 + input.variants_per_image),
            requests: views
                * if input.cdn {
                    1.0 - input.cdn_hit_ratio
                } else {
                    1.0
                },
            bytes_served: served
                * if input.cdn {
                    1.0 - input.cdn_hit_ratio
                } else {
                    1.0
                },
            edge_hits: 0.0,
            cold_reads: 0.0,
            cold_read_bytes: 0.0,
        };
        let usage = Usage {
            edge_hits: usage.requests * input.edge_hit_ratio,
            ..usage
        };
        out.push(MonthProjection {
            month,
            stored_gb: originals_gb + variants_gb,
            uploads,
            views,
            served_gb: served / GB,
            bill: monthly_bill(
                &usage,
                p,
                Delivery {
                    cdn: input.cdn,
                    cdn_hit_ratio: input.cdn_hit_ratio,
                },
            ),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> Usage {
        Usage {
            hot_bytes: 0.0,
            cold_bytes: 0.0,
            cold_class: "STANDARD_IA".into(),
            puts: 0.0,
            requests: 0.0,
            bytes_served: 0.0,
            edge_hits: 0.0,
            cold_reads: 0.0,
            cold_read_bytes: 0.0,
        }
    }

    const NO_CDN: Delivery = Delivery {
        cdn: false,
        cdn_hit_ratio: 0.0,
    };

    #[test]
    fn known_arithmetic() {
        let p = Prices::default();
        // 7.5 TB a month served straight from object storage at $0.09/GB: $675.
        let served = Usage {
            bytes_served: 7.5e12,
            ..empty()
        };
        let b = monthly_bill(&served, &p, NO_CDN);
        assert!((b.line("internet egress") - 675.0).abs() < 1e-9, "{b:?}");
        // 155 TB stored at $0.023/GB-month: about $3,600 ($3,565).
        let stored = Usage {
            hot_bytes: 155e12,
            ..empty()
        };
        let b = monthly_bill(&stored, &p, NO_CDN);
        assert!((b.total - 3565.0).abs() < 1e-6, "{b:?}");
        // The same bytes cold in Standard-IA: $1,937.50.
        let cold = Usage {
            cold_bytes: 155e12,
            ..empty()
        };
        assert!((monthly_bill(&cold, &p, NO_CDN).total - 1937.5).abs() < 1e-6);
        // A million GETs on Standard: $0.40; a million PUTs: $5.
        let reqs = Usage {
            requests: 1e6,
            puts: 1e6,
            ..empty()
        };
        let b = monthly_bill(&reqs, &p, NO_CDN);
        assert!((b.line("GET requests, hot") - 0.4).abs() < 1e-9);
        assert!((b.line("PUT requests") - 5.0).abs() < 1e-9);
    }

    #[test]
    fn a_cdn_bills_what_users_receive() {
        let p = Prices::default();
        // The edges sent 1 TB of misses; at a 90 % hit ratio users received 10 TB.
        let u = Usage {
            bytes_served: 1e12,
            requests: 1e6,
            ..empty()
        };
        let b = monthly_bill(
            &u,
            &p,
            Delivery {
                cdn: true,
                cdn_hit_ratio: 0.9,
            },
        );
        assert!(
            (b.line("CDN egress") - 10_000.0 * 0.085).abs() < 1e-6,
            "{b:?}"
        );
        assert!((b.line("CDN requests") - 1e7 / 1e4 * 0.01).abs() < 1e-6);
        assert_eq!(b.line("internet egress"), 0.0);
    }

    #[test]
    fn projection_accumulates_storage() {
        let p = Prices::default();
        let input = ProjectionInput {
            daily_uploads: 1000.0,
            avg_original_mb: 5.0,
            variants_mb: 0.0,
            variants_per_image: 0.0,
            views_per_upload: 0.0,
            months: 3,
            ..ProjectionInput::default()
        };
        let m = project(&input, &p).unwrap();
        // 30,000 uploads of 5 MB a month: 150 GB a month, 450 GB after three.
        assert!((m[2].stored_gb - 450.0).abs() < 1e-9);
        assert!((m[2].bill.line("storage, hot (STANDARD)") - 450.0 * 0.023).abs() < 1e-9);
        assert!((m[0].bill.line("PUT requests") - 30.0 * 0.005).abs() < 1e-9);
        let bad = ProjectionInput {
            months: 0,
            ..ProjectionInput::default()
        };
        assert!(project(&bad, &p).is_err());
    }

    #[test]
    fn originals_in_another_class_are_billed_at_its_price() {
        let p = Prices::default();
        let input = ProjectionInput {
            daily_uploads: 100.0,
            avg_original_mb: 10.0,
            variants_mb: 0.0,
            originals_class: "GLACIER_IR".into(),
            views_per_upload: 0.0,
            months: 1,
            ..ProjectionInput::default()
        };
        let m = project(&input, &p).unwrap();
        // 3,000 × 10 MB = 30 GB at $0.004.
        assert!((m[0].bill.line("storage, cold (GLACIER_IR)") - 0.12).abs() < 1e-9);
    }
}
