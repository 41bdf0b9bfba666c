//! Purges across a fleet of edges: two `flexphoto up` processes on one database and one store,
//! each with its own edge, both listed in `edge.purge_urls`. Deleting an image removes it
//! from both edges' caches at once (long before their revalidation would), and an edge that
//! is down when the delete runs gets the purge through the delete job's retries.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use serde_json::Value;

use crate::helpers::{jpeg, App, Backend, Options, ADMIN};

const TOKEN: &str = "fleet-edge-admin-token-0123456789";

/// The same path on `edge` as `url` has on its own edge.
fn on_edge(url: &str, edge: &str) -> String {
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or_else(|| panic!("not a URL: {url}"));
    format!("{edge}{path}")
}

async fn status_of(url: &str) -> u16 {
    crate::helpers::send(Method::GET, url, &[], Bytes::new(), Duration::from_secs(20))
        .await
        .map(|r| r.status)
        .unwrap_or(0)
}

/// Waits until `url` answers `want`; panics after `secs`.
async fn wait_status(url: &str, want: u16, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = status_of(url).await;
        if s == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} answers {s}, not {want}, after {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Uploads through `app` and returns the image's id and thumbnail URL on each edge, both
/// fetched once (so both edges hold it).
async fn cached_on_both(app: &App, edges: &[String], seed: u32) -> (String, Vec<String>) {
    let (s, v) = app
        .upload(ADMIN, "fleet", "f.jpg", &jpeg(320, 240, seed))
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let img = app.wait_done(&id, Duration::from_secs(60)).await;
    assert_eq!(img["status"], "ready", "{img}");
    let thumb = img["variants"]["thumb"].as_str().unwrap().to_owned();
    let urls: Vec<String> = edges.iter().map(|e| on_edge(&thumb, e)).collect();
    for u in &urls {
        for _ in 0..2 {
            assert_eq!(status_of(u).await, 200, "{u}");
        }
    }
    (id, urls)
}

async fn delete(app: &App, id: &str) {
    let r = app.delete(&format!("/v1/images/{id}"), ADMIN).await;
    assert_eq!(r.status, 204);
}

#[tokio::test]
async fn deletes_purge_every_edge_and_reach_one_that_was_down() {
    let shared = std::env::temp_dir().join(format!("flexphoto-fleet-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&shared).unwrap();
    let db = format!("sqlite:{}", shared.join("fleet.db").display());
    let opts = || {
        let mut o = Options::new(Backend::Sqlite)
            .shared_database(&db)
            .env(
                "FLEXPHOTO__STORAGE__DIR",
                shared.join("objects").display().to_string(),
            )
            .env(
                "FLEXPHOTO_EDGE_SIGNING_KEYS",
                "00112233445566778899aabbccddeeff",
            )
            .env("FLEXPHOTO__EDGE__ADMIN_TOKEN", TOKEN)
            // Only a purge makes an edge forget a source this soon.
            .env("FLEXPHOTO_EDGE__ORIGIN__REVALIDATE_SECS", "3600")
            .env("FLEXPHOTO__QUEUE__MAX_ATTEMPTS", "100")
            .env("FLEXPHOTO__QUEUE__BACKOFF_MAX_SECS", "1");
        o.up = true;
        o
    };
    let mut a = App::prepare(opts()).await;
    let mut b = App::prepare(opts()).await;
    let edges = vec![a.edge.clone().unwrap(), b.edge.clone().unwrap()];
    let list = format!("[\"{}\", \"{}\"]", edges[0], edges[1]);
    for app in [&mut a, &mut b] {
        app.env
            .insert("FLEXPHOTO__EDGE__PURGE_URLS".into(), list.clone());
    }
    a.start();
    b.start();

    // Both edges up: one delete, both edges answer 404 at once.
    let (id, urls) = cached_on_both(&a, &edges, 91).await;
    delete(&a, &id).await;
    for u in &urls {
        wait_status(u, 404, 20).await;
    }

    // The second edge is down when the delete runs: the job keeps retrying, naming it, and
    // gets through once it is back.
    let (id, urls) = cached_on_both(&a, &edges, 92).await;
    b.kill9();
    delete(&a, &id).await;
    wait_status(&urls[0], 404, 20).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let retrying: Value = loop {
        let (s, page) = a.get_json("/v1/jobs?state=queued&kind=delete", ADMIN).await;
        assert_eq!(s, 200, "{page}");
        let job = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["image_id"] == id.as_str())
            .cloned();
        if let Some(j) = job.filter(|j| j["attempts"].as_i64() >= Some(2)) {
            break j;
        }
        assert!(Instant::now() < deadline, "no retrying delete job: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        retrying["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(&edges[1])),
        "the error names the edge that is down: {retrying}"
    );
    b.start();
    wait_status(&urls[1], 404, 30).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, page) = a.get_json("/v1/jobs?state=queued&kind=delete", ADMIN).await;
        let (_, dead) = a.get_json("/v1/jobs?state=dead&kind=delete", ADMIN).await;
        assert_eq!(dead["items"].as_array().map(Vec::len), Some(0), "{dead}");
        if page["items"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the delete job never finished: {page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.cleanup().await;
    a.cleanup().await;
    let _ = std::fs::remove_dir_all(&shared);
}
