//! The S3 origin against a real S3-protocol server (s3s-fs in CI).
//!
//! `s3_origin_serves_images` needs FLEXPHOTO_TEST_S3_ENDPOINT, _ACCESS_KEY, _SECRET_KEY and
//! _BUCKET (set by .ci/run). `stale_if_error_when_the_origin_dies` starts its own `s3s-fs`
//! (from PATH or ~/.cargo/bin) so it can stop it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use flexphoto_storage::s3::S3Store;
use flexphoto_storage::ObjectStore;
use flexphoto_storage::S3Config;
use flexphoto_url::ImageKey;

use crate::harness::{free_port, make_image, temp_dir, Edge};

struct S3Env {
    endpoint: String,
    access: String,
    secret: String,
    bucket: String,
}

fn from_env() -> Option<S3Env> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (
        get("FLEXPHOTO_TEST_S3_ENDPOINT"),
        get("FLEXPHOTO_TEST_S3_ACCESS_KEY"),
        get("FLEXPHOTO_TEST_S3_SECRET_KEY"),
        get("FLEXPHOTO_TEST_S3_BUCKET"),
    ) {
        (Some(endpoint), Some(access), Some(secret), Some(bucket)) => Some(S3Env {
            endpoint,
            access,
            secret,
            bucket,
        }),
        _ => {
            crate::skip::skip(
                "s3",
                "FLEXPHOTO_TEST_S3_* is not set; the S3 origin test did not run (scripts/test sets it)",
            );
            None
        }
    }
}

fn upload(s: &S3Env, key: &str, body: Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = rt
        .block_on(S3Store::new(&S3Config {
            endpoint: Some(s.endpoint.clone()),
            region: "us-east-1".into(),
            bucket: s.bucket.clone(),
            path_style: true,
            credentials: Some((s.access.clone(), s.secret.clone())),
        }))
        .unwrap();
    rt.block_on(store.put(
        &ImageKey::parse(key).unwrap(),
        Bytes::from(body),
        "image/jpeg",
    ))
    .unwrap();
}

fn edge_env(s: &S3Env, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = vec![
        ("FLEXPHOTO_EDGE__ORIGIN__KIND".into(), "s3".into()),
        (
            "FLEXPHOTO_EDGE__ORIGIN__S3__ENDPOINT".into(),
            s.endpoint.clone(),
        ),
        (
            "FLEXPHOTO_EDGE__ORIGIN__S3__BUCKET".into(),
            s.bucket.clone(),
        ),
        (
            "FLEXPHOTO_EDGE__ORIGIN__S3__ACCESS_KEY".into(),
            s.access.clone(),
        ),
        (
            "FLEXPHOTO_EDGE__ORIGIN__S3__SECRET_KEY".into(),
            s.secret.clone(),
        ),
    ];
    v.extend(extra.iter().map(|(a, b)| (a.to_string(), b.to_string())));
    v
}

#[test]
fn s3_origin_serves_images() {
    let Some(s) = from_env() else { return };
    let prefix = format!("it-{}-{}", std::process::id(), free_port());
    upload(
        &s,
        &format!("{prefix}/photo one.jpg"),
        make_image(800, 600, false, ".jpg"),
    );
    let env = edge_env(&s, &[]);
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let e = Edge::start_configured(&env_ref);
    let r = e.get(&format!("/img/{prefix}/photo%20one.jpg?w=200&fmt=webp"));
    assert_eq!(r.status, 200, "{}", r.text());
    let d = r.decode();
    assert!(d.is("webp"));
    assert_eq!((d.width, d.height), (200, 150));
    assert_eq!(e.get(&format!("/img/{prefix}/missing.jpg")).status, 404);
    let again = e.get(&format!("/img/{prefix}/photo%20one.jpg?w=200&fmt=webp"));
    assert_eq!(again.header("x-cache"), Some("memory"));
}

fn s3s_fs_binary() -> Option<PathBuf> {
    let home = std::env::var("HOME").unwrap_or_default();
    let candidates = [PathBuf::from(home).join(".cargo/bin/s3s-fs")];
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("s3s-fs");
            if p.exists() {
                return Some(p);
            }
        }
    }
    candidates.into_iter().find(|p| p.exists())
}

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `s3s-fs` serving `root` on `port` and waits until it accepts connections.
fn start_s3s(bin: &PathBuf, root: &std::path::Path, port: u16) -> Server {
    let server = Server(
        Command::new(bin)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                "AKTEST",
                "--secret-key",
                "SKTEST",
            ])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

fn own_s3(port: u16, bucket: &str) -> S3Env {
    S3Env {
        endpoint: format!("http://127.0.0.1:{port}"),
        access: "AKTEST".into(),
        secret: "SKTEST".into(),
        bucket: bucket.into(),
    }
}

#[test]
fn stale_if_error_when_the_origin_dies() {
    let Some(bin) = s3s_fs_binary() else {
        crate::skip::skip(
            "s3",
            "s3s-fs is not installed; the stale-if-error test did not run",
        );
        return;
    };
    let root = temp_dir("s3s");
    std::fs::create_dir_all(root.join("stale")).unwrap();
    let port = free_port();
    let server = start_s3s(&bin, &root, port);
    let s = own_s3(port, "stale");
    upload(&s, "p.jpg", make_image(400, 300, false, ".jpg"));
    let env = edge_env(
        &s,
        &[
            ("FLEXPHOTO_EDGE__ORIGIN__REVALIDATE_SECS", "1"),
            ("FLEXPHOTO_EDGE__ORIGIN__TIMEOUT_MS", "1000"),
        ],
    );
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let e = Edge::start_configured(&env_ref);
    let fresh = e.get("/img/p.jpg?w=100");
    assert_eq!(fresh.status, 200, "{}", fresh.text());
    assert!(fresh.header("warning").is_none());
    drop(server);
    std::thread::sleep(Duration::from_millis(1300));
    let stale = e.get("/img/p.jpg?w=100");
    assert_eq!(stale.status, 200, "{}", stale.text());
    assert_eq!(stale.body, fresh.body);
    assert!(stale.header("warning").is_some_and(|w| w.contains("110")));
    assert!(stale
        .header("cache-status")
        .is_some_and(|c| c.contains("stale")));
    // Another size of the same source is made from the cached source bytes.
    assert_eq!(e.get("/img/p.jpg?w=101").status, 200);
    // A source never seen cannot be served: the origin's failure shows.
    let uncached = e.get("/img/never-seen.jpg?w=101");
    assert!(
        uncached.status == 502 || uncached.status == 504,
        "{}",
        uncached.status
    );
    assert!(e.metric("flexphoto_stale_served_total", "") >= 1.0);
}

/// Fault injection: the origin goes away under load, the edge is killed and restarted while
/// it is away, and the origin comes back. Cached images keep being served (stale, from disk
/// after the restart), nothing answers 5xx but the origin's own failure for never-seen
/// sources, nothing hangs, and fresh answers resume once the origin is back.
#[test]
fn origin_outage_under_load_survives_an_edge_restart_and_recovers() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let Some(bin) = s3s_fs_binary() else {
        crate::skip::skip(
            "s3",
            "s3s-fs is not installed; the origin outage test did not run",
        );
        return;
    };
    let root = temp_dir("s3s-outage");
    std::fs::create_dir_all(root.join("outage")).unwrap();
    let port = free_port();
    let server = start_s3s(&bin, &root, port);
    let s = own_s3(port, "outage");
    for i in 0..3 {
        upload(
            &s,
            &format!("p{i}.jpg"),
            make_image(500, 400, false, ".jpg"),
        );
    }
    let disk = temp_dir("outage-disk");
    let disk_dir = disk.to_string_lossy().into_owned();
    let env = edge_env(
        &s,
        &[
            ("FLEXPHOTO_EDGE__ORIGIN__REVALIDATE_SECS", "1"),
            ("FLEXPHOTO_EDGE__ORIGIN__TIMEOUT_MS", "1000"),
            ("FLEXPHOTO_EDGE__CACHE__DISK_DIR", &disk_dir),
        ],
    );
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let e = Edge::start_configured(&env_ref);
    let cached: Vec<String> = (0..3)
        .flat_map(|i| {
            [
                format!("/img/p{i}.jpg?w=120"),
                format!("/img/p{i}.jpg?w=90&fmt=webp"),
            ]
        })
        .collect();
    let mut fresh = Vec::new();
    for path in &cached {
        let r = e.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        fresh.push(r.body);
    }
    // Disk writes are asynchronous; wait until they have settled.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut last = -1.0;
    loop {
        let now = e.metric("flexphoto_disk_cache_bytes", "");
        if now > 0.0 && now == last {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "entries never reached the disk tier"
        );
        last = now;
        std::thread::sleep(Duration::from_millis(300));
    }

    // Load: four clients ask for the cached sizes and for a never-seen source, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(String, u16, bool)>>> = Arc::default();
    let edge_port = e.port;
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (stop, seen, cached) = (stop.clone(), seen.clone(), cached.clone());
            std::thread::spawn(move || {
                let mut n = c;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let path = if n % 5 == 0 {
                        format!("/img/never-{n}.jpg?w=50")
                    } else {
                        cached[n % cached.len()].clone()
                    };
                    let started = std::time::Instant::now();
                    // Refused connections are the edge being restarted; anything else counts.
                    if let Ok(r) = crate::harness::try_request(edge_port, "GET", &path, &[]) {
                        assert!(
                            started.elapsed() < Duration::from_secs(10),
                            "{path} took {:?}",
                            started.elapsed()
                        );
                        let stale = r.header("warning").is_some();
                        seen.lock().unwrap().push((path, r.status, stale));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(500));
    drop(server);
    std::thread::sleep(Duration::from_millis(2000));
    // Killed while the origin is away: the cached answers come back from disk.
    let e = e.restart_after_kill();
    std::thread::sleep(Duration::from_millis(1500));
    for (path, body) in cached.iter().zip(&fresh) {
        let r = e.get(path);
        assert_eq!(r.status, 200, "{path} after restart: {}", r.text());
        assert_eq!(&r.body, body, "{path}: not the cached answer");
        assert!(
            r.header("warning").is_some_and(|w| w.contains("110")),
            "{path}"
        );
    }
    // The origin returns (same data, same port): answers turn fresh again.
    let _server = start_s3s(&bin, &root, port);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = e.get(&cached[0]);
        if r.status == 200 && r.header("warning").is_none() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the edge never left stale mode"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let seen = seen.lock().unwrap();
    assert!(seen.len() > 50, "too little load: {} answers", seen.len());
    for (path, status, _) in seen.iter() {
        if path.contains("never-") {
            assert!(
                matches!(status, 404 | 502 | 504),
                "{path}: {status} (only the origin's failure or a 404 may show)"
            );
        } else {
            assert_eq!(*status, 200, "{path}: a cached image must always be served");
        }
    }
    assert!(
        seen.iter().any(|(_, _, stale)| *stale),
        "nothing was served stale"
    );
    assert!(e.metric("flexphoto_stale_served_total", "") >= 1.0);
}
