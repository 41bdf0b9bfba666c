//! Starting the real `flexphoto` binary against a fresh database and store, and speaking its
//! API.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use serde_json::Value;

pub const ADMIN: &str = "test-admin-key-0123456789";
/// The S3 webhook's shared secret in every test app.
pub const WEBHOOK_SECRET: &str = "test-webhook-secret-0123456789";

/// A response: status, headers and the whole body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// Sends one request through a real HTTP client and reads the whole answer.
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    timeout: Duration,
) -> Result<Reply, String> {
    // A client per request: each test has its own runtime, and servers restart on the same
    // port, so pooled connections would outlive both.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| e.to_string())?;
    let mut req = client.request(method, url).timeout(timeout).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.map_err(|e| e.to_string())?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The backends available here: SQLite always, Postgres when `FLEXPHOTO_TEST_PG_URL` is set.
pub fn backends() -> Vec<Backend> {
    let mut v = vec![Backend::Sqlite];
    if std::env::var("FLEXPHOTO_TEST_PG_URL").is_ok_and(|u| !u.is_empty()) {
        v.push(Backend::Postgres);
    } else {
        crate::skip::skip("postgres", "set FLEXPHOTO_TEST_PG_URL=postgres://USER:PASS@127.0.0.1/DB (a role with CREATEDB) to run against Postgres");
    }
    v
}

/// S3 settings from `FLEXPHOTO_TEST_S3_*`, when set.
pub fn s3_env() -> Option<HashMap<String, String>> {
    let ep = std::env::var("FLEXPHOTO_TEST_S3_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())?;
    let get = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let mut m = HashMap::new();
    m.insert("FLEXPHOTO__STORAGE__KIND".into(), "s3".into());
    m.insert("FLEXPHOTO__STORAGE__S3__ENDPOINT".into(), ep);
    m.insert(
        "FLEXPHOTO__STORAGE__S3__ACCESS_KEY".into(),
        get("FLEXPHOTO_TEST_S3_ACCESS_KEY", "AK"),
    );
    m.insert(
        "FLEXPHOTO__STORAGE__S3__SECRET_KEY".into(),
        get("FLEXPHOTO_TEST_S3_SECRET_KEY", "SK"),
    );
    m.insert(
        "FLEXPHOTO__STORAGE__S3__BUCKET".into(),
        get("FLEXPHOTO_TEST_S3_BUCKET", "flexphoto-test"),
    );
    m.insert("FLEXPHOTO__STORAGE__S3__REGION".into(), "us-east-1".into());
    Some(m)
}

/// A client of the test S3 server, when one is configured.
pub fn s3_client() -> Option<aws_sdk_s3::Client> {
    let m = s3_env()?;
    let creds = aws_sdk_s3::config::Credentials::new(
        &m["FLEXPHOTO__STORAGE__S3__ACCESS_KEY"],
        &m["FLEXPHOTO__STORAGE__S3__SECRET_KEY"],
        None,
        None,
        "test",
    );
    let conf = aws_sdk_s3::Config::builder()
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(&m["FLEXPHOTO__STORAGE__S3__ENDPOINT"])
        .credentials_provider(creds)
        .force_path_style(true)
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .build();
    Some(aws_sdk_s3::Client::from_conf(conf))
}

/// Creates `bucket` on the test S3 server if it is not there yet.
pub async fn ensure_named_bucket(bucket: &str) {
    let Some(client) = s3_client() else { return };
    if client.head_bucket().bucket(bucket).send().await.is_err() {
        client
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .expect("create a test bucket");
    }
}

/// Creates the test bucket if the S3 server does not have it yet.
pub async fn ensure_bucket() {
    let Some(m) = s3_env() else { return };
    ensure_named_bucket(&m["FLEXPHOTO__STORAGE__S3__BUCKET"]).await;
}

/// Whether `key` exists in `bucket` on the test S3 server.
pub async fn s3_has(bucket: &str, key: &str) -> bool {
    match s3_client() {
        Some(c) => c.head_object().bucket(bucket).key(key).send().await.is_ok(),
        None => false,
    }
}

/// The shared fixtures folder, or `None` (with a skip message) when it is absent.
pub fn fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
    if dir.join("manifest.json").is_file() {
        Some(dir)
    } else {
        crate::skip::skip("fixtures", &format!("{} is missing", dir.display()));
        None
    }
}

/// A fresh Postgres database: its URL and its name (for [`drop_pg_db`]).
pub async fn fresh_pg_db() -> (String, String) {
    let base = std::env::var("FLEXPHOTO_TEST_PG_URL").expect("FLEXPHOTO_TEST_PG_URL");
    let name = format!("fp_test_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(&base)
        .await
        .expect("connect to FLEXPHOTO_TEST_PG_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .expect("CREATE DATABASE (the role needs CREATEDB)");
    pool.close().await;
    let (prefix, _) = base.rsplit_once('/').expect("a URL ending in /DB");
    let query = base
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    (format!("{prefix}/{name}{query}"), name)
}

/// Drops a database made by [`fresh_pg_db`].
pub async fn drop_pg_db(name: &str) {
    if let Ok(base) = std::env::var("FLEXPHOTO_TEST_PG_URL") {
        if let Ok(pool) = sqlx::PgPool::connect(&base).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&pool)
            .await;
        }
    }
}

/// A running `flexphoto` process and what it needs.
pub struct App {
    pub base: String,
    /// The edge's base URL under `flexphoto up`.
    pub edge: Option<String>,
    pub data_dir: PathBuf,
    pub env: HashMap<String, String>,
    pub args: Vec<String>,
    child: Option<Child>,
    pg_db: Option<String>,
}

pub struct Options {
    pub backend: Backend,

    pub env: Vec<(&'static str, String)>,
    pub s3: bool,
    /// Run `flexphoto up` (with the edge) instead of `flexphoto serve`.
    pub up: bool,
    /// A database another process also uses (not dropped by this app's cleanup).
    pub shared_database: Option<String>,
}

impl Options {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            env: Vec::new(),
            s3: false,
            up: false,
            shared_database: None,
        }
    }
    /// Runs on `url`, a database other processes share.
    pub fn shared_database(mut self, url: &str) -> Self {
        self.shared_database = Some(url.to_owned());
        self
    }
    pub fn env(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.env.push((k, v.into()));
        self
    }
    /// Turns search on with the default (ConSE) model from `models`.
    pub fn with_search(self, models: &Path) -> Self {
        self.env("FLEXPHOTO__SEARCH__MODEL", "conse")
            .env("FLEXPHOTO__SEARCH__MODEL_DIR", models.display().to_string())
    }
}

/// The model directory `scripts/fetch-models` fills, or `None` (with a skip message).
pub fn models() -> Option<PathBuf> {
    let dir = std::env::var("FLEXPHOTO_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../models"));
    if dir.join("imagenet_classes.txt").is_file() {
        Some(dir)
    } else {
        crate::skip::skip(
            "models",
            &format!("no models in {} (run scripts/fetch-models)", dir.display()),
        );
        None
    }
}

impl App {
    /// Starts `flexphoto serve` on a random port with a fresh data dir and database.
    pub async fn spawn(opts: Options) -> App {
        let mut app = Self::prepare(opts).await;
        app.start();
        app
    }

    /// Everything [`App::spawn`] does but starting the process.
    pub async fn prepare(opts: Options) -> App {
        let data_dir =
            std::env::temp_dir().join(format!("flexphoto-it-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&data_dir).unwrap();
        let mut env: HashMap<String, String> = HashMap::new();
        env.insert("FLEXPHOTO_ADMIN_KEY".into(), ADMIN.into());
        env.insert(
            "FLEXPHOTO__UPLOAD__WEBHOOK_SECRET".into(),
            WEBHOOK_SECRET.into(),
        );
        env.insert("FLEXPHOTO__QUEUE__POLL_MS".into(), "50".into());
        env.insert("FLEXPHOTO__QUEUE__BACKOFF_BASE_MS".into(), "100".into());
        env.insert("FLEXPHOTO__QUEUE__SHUTDOWN_GRACE_SECS".into(), "5".into());
        env.insert("FLEXPHOTO_LOG".into(), "info,sqlx=warn".into());
        // Search tests turn the model on (see `with_search`); the others do not need it.
        env.insert("FLEXPHOTO__SEARCH__MODEL".into(), "none".into());
        let mut pg_db = None;
        if let Some(url) = &opts.shared_database {
            env.insert("FLEXPHOTO__DATABASE__URL".into(), url.clone());
        } else if opts.backend == Backend::Postgres {
            let (url, name) = fresh_pg_db().await;
            env.insert("FLEXPHOTO__DATABASE__URL".into(), url);
            pg_db = Some(name);
        }
        if opts.s3 {
            env.extend(s3_env().expect("S3 env"));
        }
        for (k, v) in opts.env {
            env.insert(k.into(), v);
        }
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        let mut edge = None;
        if opts.up {
            let port = crate::ports::free_port();
            args[0] = "up".into();
            args.push("--edge-listen".into());
            args.push(format!("127.0.0.1:{port}"));
            edge = Some(format!("http://127.0.0.1:{port}"));
        }
        App {
            base: String::new(),
            edge,
            args,
            data_dir,
            env,
            child: None,
            pg_db,
        }
    }

    /// Starts (or restarts) the process and waits for its listening line.
    pub fn start(&mut self) {
        if let Err(log) = self.try_start() {
            panic!("flexphoto did not start; log:\n{log}");
        }
    }

    /// Starts (or restarts) the process; when it exits or stays silent instead of listening,
    /// returns its log.
    pub fn try_start(&mut self) -> Result<(), String> {
        let mut args = self.args.clone();
        if !self.base.is_empty() {
            // Restart on the same port.
            args[2] = self.base.trim_start_matches("http://").to_owned();
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.join("server.log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_flexphoto"))
            .args(&args)
            .envs(&self.env)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start flexphoto");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("flexphoto listening on ") {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => self.base = addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(self.log());
            }
        }
        self.child = Some(child);
        Ok(())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("server.log")).unwrap_or_default()
    }

    /// Waits for the process to exit on its own (e.g. at a failpoint); true when it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(_))) | None => {
                    self.child = None;
                    return true;
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        false
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (SIGKILL after 30 s); the exit status when it exited on its own.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Stops the server and removes the data dir and the Postgres database.
    pub async fn cleanup(mut self) {
        self.stop();
        if let Some(name) = self.pg_db.take() {
            if let Ok(base) = std::env::var("FLEXPHOTO_TEST_PG_URL") {
                if let Ok(pool) = sqlx::PgPool::connect(&base).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&pool)
                    .await;
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }

    pub async fn req(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        ct: Option<&str>,
        body: Bytes,
    ) -> Reply {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let auth = key.map(|k| format!("Bearer {k}"));
        let mut h: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = &auth {
            h.push(("authorization", a));
        }
        if let Some(c) = ct {
            h.push(("content-type", c));
        }
        send(method, &url, &h, body, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// `DELETE path` with `key`.
    pub async fn delete(&self, path: &str, key: &str) -> Reply {
        self.req(Method::DELETE, path, Some(key), None, Bytes::new())
            .await
    }

    pub async fn get_json(&self, path: &str, key: &str) -> (u16, Value) {
        let r = self
            .req(Method::GET, path, Some(key), None, Bytes::new())
            .await;
        (r.status, json_of(&r))
    }

    pub async fn post_json(&self, path: &str, key: &str, body: &Value) -> (u16, Value) {
        let r = self
            .req(
                Method::POST,
                path,
                Some(key),
                Some("application/json"),
                Bytes::from(body.to_string()),
            )
            .await;
        (r.status, json_of(&r))
    }

    /// PATCH with a JSON body; the whole reply (some callers read the error text).
    pub async fn patch_json(&self, path: &str, key: &str, body: &Value) -> Reply {
        self.req(
            Method::PATCH,
            path,
            Some(key),
            Some("application/json"),
            Bytes::from(body.to_string()),
        )
        .await
    }

    /// Uploads a photo as `key` and waits until it is processed; its id.
    pub async fn upload_ready(&self, key: &str, owner: &str, name: &str, data: &[u8]) -> String {
        let (s, v) = self.upload(key, owner, name, data).await;
        assert_eq!(s, 201, "{v}");
        let id = v["id"].as_str().unwrap().to_owned();
        self.wait_done(&id, Duration::from_secs(60)).await;
        id
    }

    /// One-shot multipart upload.
    pub async fn upload(&self, key: &str, owner: &str, name: &str, data: &[u8]) -> (u16, Value) {
        let form = Multipart::new().text("owner", owner).file(
            "file",
            name,
            "application/octet-stream",
            data,
        );
        self.post_form("/v1/images", key, form).await
    }

    /// POSTs a multipart form to `path` with `key`; (status, JSON).
    pub async fn post_form(&self, path: &str, key: &str, form: Multipart) -> (u16, Value) {
        let (body, content_type) = form.finish();
        let r = self
            .req(
                Method::POST,
                path,
                Some(key),
                Some(&content_type),
                Bytes::from(body),
            )
            .await;
        (r.status, json_of(&r))
    }

    /// Waits until the image is `ready` or `failed`.
    pub async fn wait_done(&self, id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (s, v) = self.get_json(&format!("/v1/images/{id}"), ADMIN).await;
            assert_eq!(s, 200, "{v}");
            if v["status"] == "ready" || v["status"] == "failed" {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "image {id} still {} after {timeout:?}; log:\n{}",
                    v["status"],
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether some finished process job took more than one attempt (work that an outage or
    /// a crash interrupted was done again); the jobs page in the message otherwise.
    pub async fn a_process_job_was_retried(&self) -> Result<(), Value> {
        let (_, done) = self
            .get_json("/v1/jobs?state=done&kind=process&limit=200", ADMIN)
            .await;
        let retried = done["items"]
            .as_array()
            .is_some_and(|jobs| jobs.iter().any(|j| j["attempts"].as_i64() >= Some(2)));
        if retried {
            Ok(())
        } else {
            Err(done)
        }
    }

    /// Creates a key with `role` (and owner scope) through the API.
    pub async fn key(&self, role: &str, owner: Option<&str>) -> String {
        let (s, v) = self
            .post_json(
                "/v1/keys",
                ADMIN,
                &serde_json::json!({ "name": format!("{role} key"), "role": role, "owner": owner }),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v["key"].as_str().unwrap().to_owned()
    }
}

impl App {
    /// The process's `/metrics` page.
    pub async fn metrics(&self) -> String {
        let r = self
            .req(Method::GET, "/metrics", Some(ADMIN), None, Bytes::new())
            .await;
        assert_eq!(r.status, 200);
        String::from_utf8_lossy(&r.body).into_owned()
    }
}

/// The value of one sample (`name{labels}` as written) in a Prometheus text page; 0 when
/// absent.
pub fn sample(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

impl Drop for App {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            // A failed test shows what the server said about it.
            let log = self.log();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("ERROR") || l.contains("WARN"))
                .collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "--- last warnings and errors of {} ({}) ---\n{}",
                self.base,
                self.data_dir.display(),
                tail.join("\n")
            );
        }
    }
}

/// A multipart/form-data body built part by part, as browsers and `curl -F` send them.
pub struct Multipart {
    body: Vec<u8>,
}

impl Multipart {
    const BOUNDARY: &'static str = "XtestBoundaryX";

    pub fn new() -> Self {
        Self { body: Vec::new() }
    }

    /// Adds a text field.
    pub fn text(mut self, name: &str, value: &str) -> Self {
        let b = Self::BOUNDARY;
        self.body.extend_from_slice(
            format!("--{b}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
        self
    }

    /// Adds a file field.
    pub fn file(mut self, name: &str, filename: &str, content_type: &str, data: &[u8]) -> Self {
        let b = Self::BOUNDARY;
        self.body.extend_from_slice(
            format!(
                "--{b}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n\
                 Content-Type: {content_type}\r\n\r\n"
            )
            .as_bytes(),
        );
        self.body.extend_from_slice(data);
        self.body.extend_from_slice(b"\r\n");
        self
    }

    /// The body and its Content-Type header.
    pub fn finish(mut self) -> (Vec<u8>, String) {
        let b = Self::BOUNDARY;
        self.body
            .extend_from_slice(format!("--{b}--\r\n").as_bytes());
        (self.body, format!("multipart/form-data; boundary={b}"))
    }
}

pub fn json_of(r: &Reply) -> Value {
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

/// A small JPEG generated with libvips: a gradient whose pattern depends on `seed`, so each
/// seed gives different bytes.
pub fn jpeg(width: u32, height: u32, seed: u32) -> Vec<u8> {
    flexphoto_media::vips::init(1).unwrap();
    let mut px = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            px.push(((x * 255 / width.max(1)) ^ seed) as u8);
            px.push(((y * 255 / height.max(1)) + seed * 7) as u8);
            px.push(((x + y + seed * 13) % 256) as u8);
        }
    }
    let img = flexphoto_media::vips::Image::from_pixels(&px, width, height, 3).unwrap();
    img.save(".jpg[Q=90]").unwrap().to_vec()
}
