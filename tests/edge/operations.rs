//! Health, metrics, config check mode, purge and graceful shutdown.

use std::time::{Duration, Instant};

use crate::harness::{standard_origin, Edge};

#[test]
fn health_metrics_and_purge() {
    let origin = standard_origin("ops");
    let e = Edge::start(
        &origin,
        &[("FLEXPHOTO_EDGE__SERVER__ADMIN_TOKEN", "s3cret-token")],
        &[],
    );
    assert_eq!(e.get("/healthz").status, 200);
    e.get("/img/land.jpg?w=64");
    e.get("/img/land.jpg?w=64");
    e.get("/img/nope.jpg");
    let m = e.get("/metrics").text();
    for name in [
        "flexphoto_requests_total",
        "flexphoto_cache_lookups_total",
        "flexphoto_transform_seconds",
        "flexphoto_origin_seconds",
        "flexphoto_origin_fetches_total",
        "flexphoto_bytes_out_total",
        "flexphoto_transforms_in_flight",
        "flexphoto_transform_queue_depth",
    ] {
        assert!(m.contains(name), "metrics lack {name}");
    }
    assert_eq!(e.metric("flexphoto_requests_total", "status=\"404\""), 1.0);
    assert_eq!(
        e.metric(
            "flexphoto_cache_lookups_total",
            "result=\"hit\",tier=\"memory\""
        ),
        1.0
    );

    assert_eq!(
        e.req(
            "POST",
            "/admin/purge?key=land.jpg",
            &[("Content-Length", "0")]
        )
        .status,
        403
    );
    assert_eq!(
        e.req(
            "POST",
            "/admin/purge?key=land.jpg",
            &[("Authorization", "Bearer wrong"), ("Content-Length", "0")]
        )
        .status,
        403
    );
    let r = e.req(
        "POST",
        "/admin/purge?key=land.jpg",
        &[
            ("Authorization", "Bearer s3cret-token"),
            ("Content-Length", "0"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let after = e.get("/img/land.jpg?w=64");
    assert_eq!(
        after.header("x-cache"),
        Some("miss"),
        "purge dropped the cached result"
    );
    assert_eq!(
        e.metric("flexphoto_origin_fetches_total", ""),
        2.0,
        "and the cached source"
    );
}

#[test]
fn config_check_mode() {
    let bin = env!("CARGO_BIN_EXE_flexphoto-edge");
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/edge.toml");
    let ok = std::process::Command::new(bin)
        .args(["--config", shipped, "--test"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = std::process::Command::new(bin)
        .args(["--config", shipped, "--test"])
        .env("FLEXPHOTO_EDGE__TRANSFORM__JPEG_QUALITY", "500")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("transform.jpeg_quality"));
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let origin = standard_origin("term");
    let mut e = Edge::start(&origin, &[], &[]);
    assert_eq!(e.get("/img/land.jpg?w=32").status, 200);
    let pid = e.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let start = Instant::now();
    loop {
        if let Some(status) = e.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `/metrics` is for the operator's scraper: loopback clients and holders of
/// `server.metrics_token` read it; a client on the internet (here, as the trusted
/// forwarding header names it) gets 403.
#[test]
fn metrics_are_for_loopback_or_the_metrics_token() {
    let origin = standard_origin("metrics-token");
    let e = Edge::start(
        &origin,
        &[
            ("FLEXPHOTO_EDGE__SERVER__METRICS_TOKEN", "scrape-token-1"),
            (
                "FLEXPHOTO_EDGE__SERVER__CLIENT_IP_HEADER",
                "x-forwarded-for",
            ),
        ],
        &[],
    );
    let public = ("X-Forwarded-For", "203.0.113.7");
    assert_eq!(e.get("/metrics").status, 200, "loopback");
    let r = e.req("GET", "/metrics", &[public]);
    assert_eq!(r.status, 403);
    assert!(r.text().contains("metrics_token"), "{}", r.text());
    assert_eq!(
        e.req(
            "GET",
            "/metrics",
            &[public, ("Authorization", "Bearer wrong")]
        )
        .status,
        403
    );
    let r = e.req(
        "GET",
        "/metrics",
        &[public, ("Authorization", "Bearer scrape-token-1")],
    );
    assert_eq!(r.status, 200);
    assert!(r.text().contains("flexphoto_requests_total"));
    // Images are still for everyone.
    assert_eq!(e.req("GET", "/img/land.jpg?w=32", &[public]).status, 200);
}

/// The edge as a library: it serves on a listener its owner bound (an ephemeral port here,
/// so nothing can take it first) and stops when its owner says so.
#[test]
fn serves_a_listener_bound_by_its_owner_and_stops_when_told() {
    use flexphoto_edge::server::{Listen, Stop};
    let origin = standard_origin("bound");
    let mut cfg =
        flexphoto_edge::config::EdgeConfig::load(Some(std::path::Path::new("/dev/null"))).unwrap();
    cfg.origin = flexphoto_storage::StorageConfig::Local {
        dir: origin.clone(),
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let edge = std::thread::spawn(move || {
        flexphoto_edge::server::run(cfg, Listen::Bound(listener), Stop::When(stopped))
    });
    // Connections wait in the listener's backlog until the server takes it over.
    let r = crate::harness::request(port, "GET", "/img/land.jpg?w=64", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some("image/jpeg")
    );
    stop.send(true).unwrap();
    let started = Instant::now();
    edge.join().unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    // Gone with the server: the listener was handed over, not copied and kept.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    let _ = std::fs::remove_dir_all(origin);
}
