//! The lifecycle end to end on the real binary: the edge under `flexphoto up` pushes access
//! statistics, images move between two S3 buckets and survive SIGKILL-like aborts at every
//! step of a move, the edge keeps serving them wherever they live, requests bring them back
//! hot, and the cost report and projection answer.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use serde_json::{json, Value};

use crate::helpers::{
    ensure_bucket, ensure_named_bucket, jpeg, s3_env, s3_has, send, App, Backend, Options, ADMIN,
};

/// Fetches an edge URL (signed as the image document gives it); returns the status.
async fn edge_get(url: &str) -> u16 {
    send(Method::GET, url, &[], Bytes::new(), Duration::from_secs(60))
        .await
        .map(|r| r.status)
        .unwrap_or(0)
}

async fn image(app: &App, id: &str) -> Value {
    let (s, v) = app.get_json(&format!("/v1/images/{id}"), ADMIN).await;
    assert_eq!(s, 200, "{v}");
    v
}

/// Waits until `check` holds for the image document, or fails with the document and log.
async fn wait_image(app: &App, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let v = image(app, id).await;
        if check(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never happened: {v}\n{}",
            app.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The edge of `flexphoto up` counts what it serves and pushes it; the image document, the
/// listing filters and the cluster view show it; an edge key can push and nothing else.
#[tokio::test]
async fn the_edge_reports_traffic_that_filters_and_documents_show() {
    let mut opts = Options::new(Backend::Sqlite).env("FLEXPHOTO__EDGE__ACCESS_PUSH_SECS", "1");
    opts.up = true;
    let app = App::spawn(opts).await;
    let (s, v) = app.upload(ADMIN, "una", "a.jpg", &jpeg(800, 600, 31)).await;
    assert_eq!(s, 201, "{v}");
    let seen = v["id"].as_str().unwrap().to_owned();
    let (_, v) = app.upload(ADMIN, "una", "b.jpg", &jpeg(800, 600, 32)).await;
    let unseen = v["id"].as_str().unwrap().to_owned();
    let doc = app.wait_done(&seen, Duration::from_secs(120)).await;
    app.wait_done(&unseen, Duration::from_secs(120)).await;
    // Two sizes of the original and the thumbnail, one of them three times (a miss, a memory
    // hit, then a hit answered by the edge's fast path): five requests for one image.
    let sized = doc["sized_urls"].as_object().unwrap();
    assert_eq!(edge_get(sized["320"].as_str().unwrap()).await, 200);
    let url_640 = sized["640"].as_str().unwrap();
    for _ in 0..3 {
        assert_eq!(edge_get(url_640).await, 200);
    }
    assert_eq!(
        edge_get(doc["variants"]["thumb"].as_str().unwrap()).await,
        200
    );
    let edge_base = &url_640[..url_640.find("/img/").unwrap()];
    let metrics = send(
        Method::GET,
        &format!("{edge_base}/metrics"),
        &[],
        Bytes::new(),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.body);
    assert!(
        metrics.contains("flexphoto_ready_hits_total 1\n"),
        "the third request should take the fast path: {metrics}"
    );
    let v = wait_image(&app, &seen, "the edge's push", |v| {
        v["lifecycle"]["access"]["requests_7d"].as_i64() == Some(5)
    })
    .await;
    assert!(v["lifecycle"]["last_accessed_at"].is_string(), "{v}");
    assert_eq!(v["lifecycle"]["tier"], "standard");
    assert_eq!(
        v["lifecycle"]["objects"].as_array().unwrap().len(),
        4,
        "{v}"
    );
    // Filters: fewer than 2 hits in 30 days finds only the unseen image; so does "not
    // accessed since an hour ago".
    for q in ["max_hits_30d=2", "not_accessed_since=1970-01-01T00:00:00Z"] {
        let (s, l) = app
            .get_json(&format!("/v1/images?owner=una&{q}"), ADMIN)
            .await;
        assert_eq!(s, 200, "{l}");
        let ids: Vec<&str> = l["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec![unseen.as_str()], "{q}: {l}");
    }
    let (s, l) = app
        .get_json("/v1/images?owner=una&storage_tier=warm", ADMIN)
        .await;
    assert_eq!(s, 400, "{l}");
    // The edge is known from its pushes.
    let (_, c) = app.get_json("/v1/cluster", ADMIN).await;
    let edge = c["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "flexphoto-up")
        .unwrap_or_else(|| panic!("{c}"));
    assert!(edge["requests"].as_i64().unwrap() >= 5, "{c}");
    // An edge key pushes statistics and can do nothing else; only admins mint one.
    let (s, k) = app
        .post_json(
            "/v1/keys",
            ADMIN,
            &json!({"name": "edge 2", "role": "edge"}),
        )
        .await;
    assert_eq!(s, 201, "{k}");
    let edge_key = k["key"].as_str().unwrap();
    let (s, _) = app.get_json(&format!("/v1/images/{seen}"), edge_key).await;
    assert_eq!(s, 403);
    let uploader = app.key("uploader", None).await;
    let (s, _) = app
        .post_json("/v1/keys", &uploader, &json!({"name": "x", "role": "edge"}))
        .await;
    assert_eq!(s, 403);
    let now = chrono::Utc::now();
    let batch = json!({
        "batch_id": "edge-2:1", "edge": "edge-2",
        "period_start": (now - chrono::Duration::minutes(1)).to_rfc3339(),
        "period_end": now.to_rfc3339(),
        "items": [{"key": doc["keys"]["original"], "requests": 2, "bytes": 10, "hits": 1}]
    });
    let (s, r) = app.post_json("/v1/access/batches", edge_key, &batch).await;
    assert_eq!((s, r["duplicate"].as_bool()), (200, Some(false)), "{r}");
    let (s, r) = app.post_json("/v1/access/batches", edge_key, &batch).await;
    assert_eq!((s, r["duplicate"].as_bool()), (200, Some(true)), "{r}");
    let (s, _) = app.post_json("/v1/access/batches", &uploader, &batch).await;
    assert_eq!(s, 403);
    let v = image(&app, &seen).await;
    assert_eq!(v["lifecycle"]["access"]["requests_7d"], 7, "{v}");
    app.cleanup().await;
}

/// Images go cold into a second bucket and come back, and a process aborted after each
/// step of a move (copy, switch) leaves the image servable and the next run finishes it.
#[tokio::test]
async fn tiering_between_two_buckets_survives_aborts_at_every_step() {
    let Some(s3) = s3_env() else {
        eprintln!("SKIP: FLEXPHOTO_TEST_S3_* is not set; the tiering test needs S3");
        return;
    };
    ensure_bucket().await;
    let cold_bucket = "flexphoto-test-cold";
    ensure_named_bucket(cold_bucket).await;
    let hot_bucket = s3["FLEXPHOTO__STORAGE__S3__BUCKET"].clone();
    let mut opts = Options::new(Backend::Sqlite)
        .env("FLEXPHOTO__TIERING__COLD_AFTER_DAYS", "0")
        .env("FLEXPHOTO__TIERING__COLD_MAX_HITS", "1")
        .env("FLEXPHOTO__TIERING__REWARM_HITS", "3")
        .env("FLEXPHOTO__TIERING__INTERVAL_SECS", "1")
        .env("FLEXPHOTO__TIERING__COLD__KIND", "s3")
        .env("FLEXPHOTO__QUEUE__LEASE_SECS", "3")
        .env("FLEXPHOTO__CLUSTER__LEASE_SECS", "3");
    for (k, v) in [
        ("ENDPOINT", "FLEXPHOTO__STORAGE__S3__ENDPOINT"),
        ("ACCESS_KEY", "FLEXPHOTO__STORAGE__S3__ACCESS_KEY"),
        ("SECRET_KEY", "FLEXPHOTO__STORAGE__S3__SECRET_KEY"),
    ] {
        let name: &'static str = match k {
            "ENDPOINT" => "FLEXPHOTO__TIERING__COLD__S3__ENDPOINT",
            "ACCESS_KEY" => "FLEXPHOTO__TIERING__COLD__S3__ACCESS_KEY",
            _ => "FLEXPHOTO__TIERING__COLD__S3__SECRET_KEY",
        };
        opts = opts.env(name, s3[v].clone());
    }
    opts = opts.env("FLEXPHOTO__TIERING__COLD__S3__BUCKET", cold_bucket);
    opts.s3 = true;
    opts.up = true;
    // First run: the move stops right after the copy.
    let mut app = App::prepare(opts.env("FLEXPHOTO__TIERING__ENABLED", "false")).await;
    app.start();
    let (s, v) = app
        .upload(ADMIN, "vic", "c.jpg", &jpeg(1200, 900, 77))
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let doc = app.wait_done(&id, Duration::from_secs(120)).await;
    let original = doc["keys"]["original"].as_str().unwrap().to_owned();
    let full = doc["keys"]["variants"]["full"].as_str().unwrap().to_owned();
    let thumb = doc["keys"]["variants"]["thumb"]
        .as_str()
        .unwrap()
        .to_owned();
    let sized = doc["sized_urls"]["320"].as_str().unwrap().to_owned();
    assert_eq!(edge_get(&sized).await, 200);
    app.stop();
    // Turn tiering on, with an abort after the copy.
    app.env
        .insert("FLEXPHOTO__TIERING__ENABLED".into(), "true".into());
    app.env
        .insert("FLEXPHOTO_FAILPOINTS".into(), "tier.after_copy".into());
    app.start();
    assert!(
        app.wait_exit(Duration::from_secs(60)),
        "the move never reached its failpoint"
    );
    assert!(
        s3_has(&hot_bucket, &original).await,
        "the hot copy went before the switch"
    );
    assert!(s3_has(cold_bucket, &original).await, "nothing was copied");
    // Second run: the move is retried and stops right after the switch.
    app.env
        .insert("FLEXPHOTO_FAILPOINTS".into(), "tier.after_switch".into());
    app.start();
    assert!(
        app.wait_exit(Duration::from_secs(60)),
        "the retry never reached the switch"
    );
    // Third run: the move finishes.
    app.env.remove("FLEXPHOTO_FAILPOINTS");
    app.start();
    let v = wait_image(&app, &id, "the move to cold", |v| {
        v["lifecycle"]["tier"] == "cold"
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while s3_has(&hot_bucket, &original).await {
        assert!(Instant::now() < deadline, "the hot copy was never deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for k in [&original, &full] {
        assert!(s3_has(cold_bucket, k).await, "{k} is not cold");
        assert!(!s3_has(&hot_bucket, k).await, "{k} is still hot");
    }
    assert!(s3_has(&hot_bucket, &thumb).await, "thumbnails stay hot");
    let tiers: Vec<(String, String)> = v["lifecycle"]["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap().into(),
                o["tier"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        tiers.contains(&("original".into(), "cold".into())),
        "{tiers:?}"
    );
    assert!(
        tiers.contains(&("thumb".into(), "standard".into())),
        "{tiers:?}"
    );
    // Cold images stay in listings, and the edge serves them from the cold bucket.
    let (_, l) = app
        .get_json("/v1/images?owner=vic&storage_tier=cold", ADMIN)
        .await;
    assert_eq!(l["items"][0]["id"], id.as_str(), "{l}");
    let other = doc["sized_urls"]["640"].as_str().unwrap().to_owned();
    assert_eq!(edge_get(&other).await, 200, "a new size of a cold original");
    // The history says why it moved.
    let (_, h) = app
        .get_json(&format!("/v1/images/{id}/history"), ADMIN)
        .await;
    assert!(h.to_string().contains("storage_tier"), "{h}");
    // Requested again (pushed traffic: 4 requests ≥ rewarm_hits 3): it comes back hot.
    let now = chrono::Utc::now();
    let batch = json!({
        "batch_id": format!("t-{id}"), "edge": "test",
        "period_start": (now - chrono::Duration::minutes(1)).to_rfc3339(),
        "period_end": now.to_rfc3339(),
        "items": [{"key": original, "requests": 4, "bytes": 4000, "hits": 0}]
    });
    let (s, r) = app.post_json("/v1/access/batches", ADMIN, &batch).await;
    assert_eq!(s, 200, "{r}");
    wait_image(&app, &id, "the move back to hot", |v| {
        v["lifecycle"]["tier"] == "standard"
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while s3_has(cold_bucket, &original).await {
        assert!(Instant::now() < deadline, "the cold copy was never deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(s3_has(&hot_bucket, &original).await);
    // Metrics count the moves.
    let r = app
        .req(Method::GET, "/metrics", Some(ADMIN), None, Bytes::new())
        .await;
    let text = String::from_utf8_lossy(&r.body);
    assert!(
        text.contains("flexphoto_tier_moves_total{direction=\"to_hot\"}"),
        "{text}"
    );
    assert!(text.contains("flexphoto_storage_bytes{"), "{text}");
    app.cleanup().await;
}

/// The cost report and the projection answer with the figures the arithmetic gives.
#[tokio::test]
async fn cost_report_and_projection() {
    let app = App::spawn(Options::new(Backend::Sqlite)).await;
    let (s, v) = app.upload(ADMIN, "wes", "d.jpg", &jpeg(900, 700, 5)).await;
    assert_eq!(s, 201, "{v}");
    app.wait_done(v["id"].as_str().unwrap(), Duration::from_secs(120))
        .await;
    let (s, r) = app.get_json("/v1/cost", ADMIN).await;
    assert_eq!(s, 200, "{r}");
    let stored: i64 = r["storage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["bytes"].as_i64().unwrap())
        .sum();
    assert!(stored > 10_000, "{r}");
    assert!(r["actual"]["total"].as_f64().unwrap() > 0.0, "{r}");
    // A what-if policy that sends everything cold saves money.
    let (s, r) = app
        .get_json("/v1/cost?cold_after_days=0&cold_max_hits=1000", ADMIN)
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["what_if"]["images_to_cold"], 1, "{r}");
    assert!(
        r["what_if"]["monthly_saving"].as_f64().unwrap() > 0.0,
        "{r}"
    );
    let (s, p) = app.get_json("/v1/tiering/plan", ADMIN).await;
    assert_eq!(s, 200, "{p}");
    // `flexphoto tier` under the same what-if policy: the full listing (streamed), the
    // totals alone, and the listing again with a pending move queued by a real run.
    let id = v["id"].as_str().unwrap();
    let tier = |args: &[&str]| -> Value {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flexphoto"))
            .arg("tier")
            .args(args)
            .args(["--json", "--data-dir", app.data_dir.to_str().unwrap()])
            .envs(&app.env)
            .env("FLEXPHOTO__TIERING__COLD_AFTER_DAYS", "0")
            .env("FLEXPHOTO__TIERING__COLD_MAX_HITS", "1000")
            .env("FLEXPHOTO__TIERING__REWARM_HITS", "2000")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    };
    let full = tier(&["--dry-run"]);
    let moves = full["plan"]["moves"].as_array().unwrap();
    assert_eq!(moves.len(), 1, "{full}");
    assert_eq!(moves[0]["id"], id, "{full}");
    assert_eq!(moves[0]["direction"], "to_cold", "{full}");
    assert!(moves[0]["bytes"].as_i64().unwrap() > 0, "{full}");
    assert_eq!(full["plan"]["to_cold_bytes"], moves[0]["bytes"], "{full}");
    assert_eq!(full["what_if"]["images_to_cold"], 1, "{full}");
    let summary = tier(&["--dry-run", "--summary"]);
    assert_eq!(summary["plan"]["moves"], json!([]), "{summary}");
    assert_eq!(summary["totals"], full["totals"], "{summary}");
    assert_eq!(summary["what_if"], full["what_if"], "{summary}");
    assert_eq!(
        tier(&["--dry-run", "--limit", "0"])["plan"]["truncated"],
        true
    );
    // 7.5 TB a month served from object storage: $675 of egress in the projection too.
    let (s, p) = app
        .post_json(
            "/v1/cost/projection",
            ADMIN,
            &json!({"daily_uploads": 1000, "views_per_upload": 250, "avg_view_kb": 1000,
                    "avg_original_mb": 0, "variants_mb": 0, "months": 1}),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    let egress = p["months"][0]["bill"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["item"] == "internet egress")
        .unwrap()["monthly"]
        .as_f64()
        .unwrap();
    assert!((egress - 675.0).abs() < 1e-6, "{p}");
    let (s, e) = app
        .post_json("/v1/cost/projection", ADMIN, &json!({"months": 0}))
        .await;
    assert_eq!(s, 400, "{e}");
    let viewer = app.key("viewer", None).await;
    assert_eq!(app.get_json("/v1/cost", &viewer).await.0, 403);
    app.cleanup().await;
}
