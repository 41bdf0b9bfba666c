//! The storage history against a real SQLite database (and Postgres when
//! FLEXPHOTO_TEST_PG_URL is set), with a clock the tests move by hand over several days.

use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};

use super::{by_tier, record, StorageHistorySettings, TierTotal};
use crate::clock::Clock;
use crate::config::RawConfig;
use crate::domain::ImageId;
use crate::lifecycle::scheduler::tiering_pass;
use crate::on_db;
use crate::store::lifecycle::StorageUsage;

use crate::lifecycle::test_world::World;

/// Noon UTC on 2026-03-01.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, d).unwrap()
}

/// The history world on SQLite (and Postgres), its clock at [`t0`].
async fn worlds(extra_toml: &str) -> Vec<World> {
    crate::lifecycle::test_world::worlds(extra_toml, t0()).await
}

/// A ready image with an original (3000 bytes), a `full` (2000) and a `thumb` (100), all hot.
async fn image(w: &World) -> ImageId {
    let id = ImageId::new();
    let at = w.clock.now();
    on_db!(&w.state.db, |p, _pg| {
        sqlx::query(
            "INSERT INTO images (id, owner, uploaded_at, original_key, declared_mime, status, created_at, updated_at, bytes) \
             VALUES ($1, 'ann', $2, $3, 'image/jpeg', 'ready', $2, $2, 3000)",
        )
        .bind(id)
        .bind(at)
        .bind(format!("o/{id}-original.jpg"))
        .execute(p)
        .await
        .unwrap();
        for (kind, bytes) in [("original", 3000i64), ("full", 2000), ("thumb", 100)] {
            sqlx::query(
                "INSERT INTO image_objects (image_id, kind, key, bytes) VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(kind)
            .bind(format!("o/{id}-{kind}.jpg"))
            .bind(bytes)
            .execute(p)
            .await
            .unwrap();
        }
    });
    id
}

/// Marks an image's original cold in the catalog (what a finished move leaves behind).
async fn original_cold(w: &World, id: ImageId) {
    on_db!(&w.state.db, |p, _pg| {
        sqlx::query(
            "UPDATE image_objects SET tier = 'cold' WHERE image_id = $1 AND kind = 'original'",
        )
        .bind(id)
        .execute(p)
        .await
        .unwrap();
    });
}

fn tiers(usage: &[StorageUsage]) -> Vec<(String, i64, i64)> {
    by_tier(usage)
        .into_iter()
        .map(|t| (t.tier, t.objects, t.bytes))
        .collect()
}

async fn history(w: &World) -> Vec<(NaiveDate, Vec<(String, i64, i64)>)> {
    w.state
        .db
        .storage_snapshots_since(day(1) - Duration::days(365))
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.day, tiers(&s.usage)))
        .collect()
}

#[tokio::test]
async fn one_snapshot_a_day_however_often_the_pass_runs() {
    for w in worlds("").await {
        let cfg = w.state.cfg.storage_history.clone();
        let db = &w.state.db;
        // Day 1: nothing stored yet. The day is recorded (empty) once; later calls that day
        // change nothing, even after an upload.
        let r = record(db, w.clock.now(), &cfg).await.unwrap();
        assert!(r.recorded);
        let id = image(&w).await;
        w.clock.advance(Duration::hours(11));
        assert!(!record(db, w.clock.now(), &cfg).await.unwrap().recorded);
        assert_eq!(history(&w).await, vec![(day(1), vec![])]);

        // Day 2, one minute after midnight: the image is there, all hot.
        w.clock
            .set(Utc.with_ymd_and_hms(2026, 3, 2, 0, 1, 0).unwrap());
        assert!(record(db, w.clock.now(), &cfg).await.unwrap().recorded);
        original_cold(&w, id).await;
        assert!(!record(db, w.clock.now(), &cfg).await.unwrap().recorded);

        // Day 3 through the deployment's tiering pass (twice): the original is cold now.
        w.clock.advance(Duration::days(1));
        tiering_pass(Arc::clone(&w.state)).await;
        let second = image(&w).await;
        tiering_pass(Arc::clone(&w.state)).await;
        let hot = |o, b| ("standard".to_owned(), o, b);
        let cold = |o, b| ("cold".to_owned(), o, b);
        assert_eq!(
            history(&w).await,
            vec![
                (day(1), vec![]),
                (day(2), vec![hot(3, 5100)]),
                (day(3), vec![cold(1, 3000), hot(2, 2100)]),
            ]
        );
        // The figures are those of storage_usage, by kind.
        let snaps = db.storage_snapshots_since(day(3)).await.unwrap();
        assert_eq!(snaps.len(), 1);
        assert_eq!(
            snaps[0].recorded_at,
            Utc.with_ymd_and_hms(2026, 3, 3, 0, 1, 0).unwrap()
        );
        let kinds: Vec<(&str, &str, i64)> = snaps[0]
            .usage
            .iter()
            .map(|u| (u.tier.as_str(), u.kind.as_str(), u.bytes))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("cold", "original", 3000),
                ("standard", "full", 2000),
                ("standard", "thumb", 100)
            ]
        );

        // Day 5 (day 4 had no pass: it is simply missing); two processes racing record once.
        w.clock.advance(Duration::days(2));
        original_cold(&w, second).await;
        let (a, b) = tokio::join!(
            record(db, w.clock.now(), &cfg),
            record(db, w.clock.now(), &cfg)
        );
        assert_eq!(
            [a.unwrap().recorded, b.unwrap().recorded]
                .iter()
                .filter(|r| **r)
                .count(),
            1
        );
        let h = history(&w).await;
        assert_eq!(
            h.iter().map(|(d, _)| *d).collect::<Vec<_>>(),
            vec![day(1), day(2), day(3), day(5)]
        );
        assert_eq!(h[3].1, vec![cold(2, 6000), hot(4, 4200)]);
    }
}

#[tokio::test]
async fn snapshots_older_than_the_retention_are_deleted() {
    for w in worlds("[storage_history]\nretention_days = 3\n").await {
        let cfg = w.state.cfg.storage_history.clone();
        assert_eq!(cfg.retention_days, 3);
        image(&w).await;
        let mut pruned = Vec::new();
        for _ in 0..7 {
            let r = record(&w.state.db, w.clock.now(), &cfg).await.unwrap();
            assert!(r.recorded);
            pruned.push(r.pruned);
            w.clock.advance(Duration::days(1));
        }
        // Kept: today (day 7) and the three days before it.
        assert_eq!(pruned, vec![0, 0, 0, 0, 1, 1, 1]);
        let h = history(&w).await;
        assert_eq!(
            h.iter().map(|(d, _)| *d).collect::<Vec<_>>(),
            vec![day(4), day(5), day(6), day(7)]
        );
        assert!(h
            .iter()
            .all(|(_, t)| t == &vec![("standard".to_owned(), 3, 5100)]));
        // The figures of the deleted days went with them.
        let left: (i64,) = on_db!(&w.state.db, |p, _pg| {
            sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM storage_history WHERE day < $1")
                .bind(day(4))
                .fetch_one(p)
                .await
                .unwrap()
        });
        assert_eq!(left.0, 0);
        // A shorter retention set later applies at the next pass.
        let shorter = StorageHistorySettings { retention_days: 1 };
        let r = record(&w.state.db, w.clock.now() - Duration::days(1), &shorter)
            .await
            .unwrap();
        assert_eq!((r.recorded, r.pruned), (false, 2));
    }
}

#[test]
fn retention_is_checked_and_named() {
    assert!(StorageHistorySettings::default().validate().is_ok());
    for bad in [0, 3651] {
        let e = StorageHistorySettings {
            retention_days: bad,
        }
        .validate()
        .unwrap_err();
        assert!(
            e.to_string().contains("storage_history.retention_days"),
            "{e}"
        );
    }
    let cfg = RawConfig::from_toml_and_env(
        "",
        [(
            "FLEXPHOTO__STORAGE_HISTORY__RETENTION_DAYS".to_owned(),
            "45".to_owned(),
        )],
    )
    .unwrap()
    .validate()
    .unwrap();
    assert_eq!(cfg.storage_history.retention_days, 45);
}

#[test]
fn tiers_sum_their_kinds() {
    let u = |tier: &str, kind: &str, objects, bytes| StorageUsage {
        tier: tier.into(),
        kind: kind.into(),
        objects,
        bytes,
        unmeasured: 0,
    };
    let t = by_tier(&[
        u("cold", "original", 2, 10),
        u("standard", "full", 3, 7),
        u("standard", "original", 1, 5),
    ]);
    assert_eq!(
        t,
        vec![
            TierTotal {
                tier: "cold".into(),
                objects: 2,
                bytes: 10
            },
            TierTotal {
                tier: "standard".into(),
                objects: 4,
                bytes: 12
            },
        ]
    );
}
