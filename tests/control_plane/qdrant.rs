//! The Qdrant server backend against a real Qdrant 1.18 server of the test's own (started with
//! `../shared/tools/qdrant/start`, with an API key): the collection and its payload indexes,
//! a wrong key refused at start, the server restarted mid-ingest (jobs retry, nothing lost),
//! filtered search and deletes. Prints SKIPPED where the tool or the models are absent.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{jpeg, models, App, Backend, Options, ADMIN};
use crate::ports::free_port;

const API_KEY: &str = "qdrant-test-key-0123456789";

/// A Qdrant server on loopback with an API key, stopped when dropped.
struct Qdrant {
    dir: PathBuf,
    http: u16,
    grpc: u16,
    script: PathBuf,
}

impl Qdrant {
    fn start() -> Option<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/tools/qdrant/start");
        if !script.is_file() {
            crate::skip::skip(
                "qdrant",
                &format!(
                    "{} is missing; the Qdrant server test did not run",
                    script.display()
                ),
            );
            return None;
        }
        let q = Qdrant {
            dir: std::env::temp_dir().join(format!(
                "flexphoto-qdrant-{}",
                uuid::Uuid::new_v4().simple()
            )),
            http: free_port(),
            grpc: free_port(),
            script,
        };
        q.up().then_some(q)
    }

    fn up(&self) -> bool {
        let ok = Command::new(&self.script)
            .arg(&self.dir)
            .arg(self.http.to_string())
            .arg(self.grpc.to_string())
            .env("QDRANT__SERVICE__API_KEY", API_KEY)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            crate::skip::skip("qdrant", "the Qdrant server did not start");
        }
        ok
    }

    fn stop(&self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("qdrant.pid")) {
            let _ = Command::new("kill").arg("-9").arg(pid.trim()).status();
            // Wait until the port is free again.
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", self.http)).is_ok()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }

    /// A REST call to the server with the API key.
    async fn rest(&self, method: http::Method, path: &str, body: Option<Value>) -> Value {
        let r = crate::helpers::send(
            method,
            &format!("http://127.0.0.1:{}{path}", self.http),
            &[("api-key", API_KEY), ("content-type", "application/json")],
            body.map(|b| bytes::Bytes::from(b.to_string()))
                .unwrap_or_default(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        serde_json::from_slice(&r.body).unwrap_or(Value::Null)
    }
}

impl Drop for Qdrant {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a process job is waiting to run again after failing (against the index).
async fn met_the_outage(app: &App) -> bool {
    let (_, queued) = app
        .get_json("/v1/jobs?state=queued&kind=process&limit=100", ADMIN)
        .await;
    queued["items"].as_array().is_some_and(|items| {
        items
            .iter()
            .any(|j| j["attempts"].as_i64() >= Some(1) && j["last_error"].is_string())
    })
}

#[tokio::test]
async fn qdrant_server_with_a_key_survives_a_restart_mid_ingest() {
    let Some(models) = models() else { return };
    let Some(q) = Qdrant::start() else { return };
    let opts = |key: &str| {
        Options::new(Backend::Sqlite)
            .with_search(&models)
            .env("FLEXPHOTO__SEARCH__INDEX", "server")
            .env("FLEXPHOTO__SEARCH__QDRANT_URL", q.url())
            .env("FLEXPHOTO__SEARCH__QDRANT_API_KEY", key)
            .env("FLEXPHOTO__SEARCH__QDRANT_COLLECTION", "restart_test")
            .env("FLEXPHOTO__QUEUE__LEASE_SECS", "3")
            .env("FLEXPHOTO__QUEUE__BACKOFF_BASE_MS", "200")
    };
    // A wrong key stops the start with a message naming the setting.
    let mut wrong = App::prepare(opts("not-the-key")).await;
    let log = wrong
        .try_start()
        .expect_err("a wrong Qdrant key must stop the start");
    assert!(log.contains("search.qdrant_url"), "{log}");
    wrong.cleanup().await;

    let app = App::spawn(opts(API_KEY)).await;
    // The collection has both vectors and an index on every filter field.
    let info = q
        .rest(http::Method::GET, "/collections/restart_test", None)
        .await;
    let schema = &info["result"]["payload_schema"];
    for field in ["owner", "uploaded_at", "status", "tags", "review_state"] {
        assert!(
            schema.get(field).is_some(),
            "no payload index on {field}: {info}"
        );
    }
    let mut ids = Vec::new();
    for seed in 0..8u32 {
        let owner = if seed % 2 == 0 { "ruth" } else { "sam" };
        let (s, v) = app
            .upload(ADMIN, owner, "p.jpg", &jpeg(1600, 1200, 5000 + seed))
            .await;
        assert_eq!(s, 201, "{v}");
        ids.push((owner, v["id"].as_str().unwrap().to_owned()));
        if seed == 3 {
            // The server dies mid-ingest, stays down until a job has failed against it,
            // and comes back.
            q.stop();
            let (s, v) = app
                .upload(ADMIN, "ruth", "p.jpg", &jpeg(1600, 1200, 5100))
                .await;
            assert_eq!(s, 201, "{v}");
            ids.push(("ruth", v["id"].as_str().unwrap().to_owned()));
            let deadline = Instant::now() + Duration::from_secs(90);
            while !met_the_outage(&app).await {
                assert!(
                    Instant::now() < deadline,
                    "no process job failed while the server was down\n{}",
                    app.log()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert!(q.up(), "the Qdrant server did not restart");
        }
    }
    for (_, id) in &ids {
        let img = app.wait_done(id, Duration::from_secs(240)).await;
        assert_eq!(img["status"], "ready", "{img}\n{}", app.log());
    }
    // The jobs that met the outage finished on a later attempt.
    if let Err(done) = app.a_process_job_was_retried().await {
        panic!("no process job was retried after the outage: {done}");
    }
    let count = |v: &Value| v["result"]["count"].as_u64().unwrap_or(0);
    let n = q
        .rest(
            http::Method::POST,
            "/collections/restart_test/points/count",
            Some(json!({"exact": true})),
        )
        .await;
    assert_eq!(count(&n), ids.len() as u64, "one point per image: {n}");
    // Filtered search runs inside the server: only ruth's images.
    let (s, v) = app
        .post_json(
            "/v1/search",
            ADMIN,
            &json!({"text": "a photo", "owner": "ruth", "limit": 20}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let got: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    let ruths: Vec<&str> = ids
        .iter()
        .filter(|(o, _)| *o == "ruth")
        .map(|(_, i)| i.as_str())
        .collect();
    assert_eq!(got.len(), ruths.len(), "{v}");
    assert!(got.iter().all(|g| ruths.contains(g)), "{v}");
    // A delete removes the point.
    let (_, victim) = &ids[0];
    let r = app.delete(&format!("/v1/images/{victim}"), ADMIN).await;
    assert!(r.status == 204 || r.status == 202, "{}", r.status);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = q
            .rest(
                http::Method::POST,
                "/collections/restart_test/points/count",
                Some(json!({"exact": true})),
            )
            .await;
        if count(&n) == ids.len() as u64 - 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the deleted image's point stayed: {n}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.cleanup().await;
}
