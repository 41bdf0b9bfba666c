//! Storage by tier over time on the real binary: the tiering pass records a snapshot a day
//! (once, however often it runs), `GET /v1/storage/history` answers with it, a day that had
//! no snapshot gets one at the next pass with the figures `GET /v1/cost` shows, and days past
//! `storage_history.retention_days` are deleted.

use std::time::{Duration, Instant};

use chrono::NaiveDate;
use serde_json::{json, Value};

use crate::helpers::{jpeg, App, Backend, Options, ADMIN};

/// `GET /v1/storage/history?days=…` as the admin; asserts 200.
async fn history(app: &App, days: u32) -> Value {
    let (s, v) = app
        .get_json(&format!("/v1/storage/history?days={days}"), ADMIN)
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

/// The recorded days, oldest first.
fn days_of(h: &Value) -> Vec<NaiveDate> {
    h["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["day"].as_str().unwrap().parse().unwrap())
        .collect()
}

/// Waits until the recorded days (of the last ten years) satisfy `check`; returns the history.
async fn wait_days(app: &App, what: &str, check: impl Fn(&[NaiveDate]) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let h = history(app, 3650).await;
        if check(&days_of(&h)) {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never happened: {h}\n{}",
            app.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes a snapshot of `day` straight into the SQLite file (the days before this test).
async fn seed_day(conn: &mut sqlx::SqliteConnection, day: NaiveDate, rows: &[(&str, &str, i64)]) {
    let at = day.and_hms_opt(0, 5, 0).unwrap().and_utc();
    sqlx::query("INSERT INTO storage_history_days (day, recorded_at) VALUES ($1, $2)")
        .bind(day)
        .bind(at)
        .execute(&mut *conn)
        .await
        .unwrap();
    for (tier, kind, bytes) in rows {
        sqlx::query(
            "INSERT INTO storage_history (day, tier, kind, objects, bytes, unmeasured) \
             VALUES ($1, $2, $3, 1, $4, 0)",
        )
        .bind(day)
        .bind(*tier)
        .bind(*kind)
        .bind(*bytes)
        .execute(&mut *conn)
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn the_tiering_pass_records_storage_history_once_a_day() {
    use sqlx::Connection;
    let opts = Options::new(Backend::Sqlite)
        .env("FLEXPHOTO__TIERING__INTERVAL_SECS", "1")
        .env("FLEXPHOTO__STORAGE_HISTORY__RETENTION_DAYS", "30");
    let mut app = App::spawn(opts).await;

    // The first pass records today's snapshot: nothing stored yet.
    let h = wait_days(&app, "the first snapshot", |d| !d.is_empty()).await;
    assert_eq!(h["retention_days"], 30);
    assert_eq!(h["days"], 3650);
    let today = days_of(&h)[0];
    assert_eq!(days_of(&h), vec![today], "{h}");
    assert_eq!(h["items"][0]["tiers"], json!([]), "{h}");
    assert_eq!(h["items"][0]["usage"], json!([]), "{h}");

    // An upload later the same day changes nothing however many passes run: one a day.
    let (s, v) = app.upload(ADMIN, "ann", "a.jpg", &jpeg(800, 600, 7)).await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    app.wait_done(&id, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let again = history(&app, 3650).await;
    assert_eq!(again["items"], h["items"], "recorded again the same day");

    // As if today's snapshot had not been taken yet (the day turned), with two earlier days
    // on record: one within the 30 days kept, one past them.
    app.stop();
    let url = format!("sqlite:{}", app.data_dir.join("flexphoto.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("DELETE FROM storage_history_days WHERE day = $1")
        .bind(today)
        .execute(&mut conn)
        .await
        .unwrap();
    let recent = today - chrono::Duration::days(3);
    let old = today - chrono::Duration::days(40);
    seed_day(
        &mut conn,
        recent,
        &[("cold", "original", 500), ("standard", "original", 1000)],
    )
    .await;
    seed_day(&mut conn, old, &[("standard", "original", 9)]).await;
    conn.close().await.unwrap();
    app.start();

    // The next pass records today's figures, the same as the cost report's storage, and
    // deletes the day past the retention.
    let h = wait_days(&app, "today's snapshot, the old day pruned", |d| {
        d == [recent, today]
    })
    .await;
    let (s, cost) = app.get_json("/v1/cost", ADMIN).await;
    assert_eq!(s, 200, "{cost}");
    let now = &h["items"][1];
    assert_eq!(now["usage"], cost["storage"], "{h}\n{cost}");
    let stored: i64 = cost["storage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["bytes"].as_i64().unwrap())
        .sum();
    assert!(stored > 0, "{cost}");
    assert_eq!(
        now["tiers"],
        json!([{ "tier": "standard", "objects": 4, "bytes": stored }]),
        "the original and three variants, all hot: {h}"
    );
    assert_eq!(
        h["items"][0]["tiers"],
        json!([
            { "tier": "cold", "objects": 1, "bytes": 500 },
            { "tier": "standard", "objects": 1, "bytes": 1000 }
        ]),
        "{h}"
    );

    // `days` counts back from today.
    assert_eq!(days_of(&history(&app, 3).await), vec![today]);
    assert_eq!(days_of(&history(&app, 4).await), vec![recent, today]);
    assert_eq!(days_of(&history(&app, 90).await), vec![recent, today]);
    for bad in ["days=0", "days=3651", "days=many", "since=2020-01-01"] {
        let (s, v) = app
            .get_json(&format!("/v1/storage/history?{bad}"), ADMIN)
            .await;
        assert_eq!(s, 400, "{bad}: {v}");
    }
    // Admins only, and not one owner's admin: it covers every owner.
    let viewer = app.key("viewer", None).await;
    let scoped = app.key("admin", Some("ann")).await;
    for key in [&viewer, &scoped] {
        let (s, v) = app.get_json("/v1/storage/history", key).await;
        assert_eq!(s, 403, "{v}");
    }
    let (s, v) = app.get_json("/v1/storage/history", ADMIN).await;
    assert_eq!((s, &v["days"]), (200, &json!(90)), "{v}");
    app.cleanup().await;
}
