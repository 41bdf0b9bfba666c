//! Images withheld by their rights: the edge reads the deny-list the control plane writes to
//! the bucket, stops serving listed keys within `withheld.poll_secs` (cached results included,
//! without fetching them again), never serves the list itself, and serves keys again once the
//! list no longer names them.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{standard_origin, Edge};

fn write_list(origin: &Path, keys: &[&str]) {
    let dir = origin.join("_flexphoto");
    std::fs::create_dir_all(&dir).unwrap();
    let body = serde_json::json!({ "version": 1, "keys": keys }).to_string();
    // Write then rename, as an object store replaces an object: never a half-written list.
    let tmp = dir.join("withheld.json.tmp");
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(tmp, dir.join("withheld.json")).unwrap();
}

/// Polls `path` until it answers `status`; returns how long that took.
fn until_status(e: &Edge, path: &str, status: u16, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let r = e.get(path);
        if r.status == status {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{path} still answers {} after {:?}, expected {status}",
            r.status,
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn withheld_keys_stop_serving_within_the_poll_period() {
    let origin = standard_origin("withheld");
    let e = Edge::start(
        &origin,
        &[("FLEXPHOTO_EDGE__WITHHELD__POLL_SECS", "1")],
        &[],
    );
    // Cached before it is withheld: a result and the source.
    assert_eq!(e.get("/img/land.jpg?w=64").status, 200);
    let hit = e.get("/img/land.jpg?w=64");
    assert_eq!(hit.header("x-cache"), Some("memory"), "{:?}", hit.headers);
    assert_eq!(e.get("/img/alpha.png?w=32").status, 200);
    let fetches = e.metric("flexphoto_origin_fetches_total", "");

    write_list(&origin, &["land.jpg"]);
    let took = until_status(&e, "/img/land.jpg?w=64", 404, Duration::from_secs(5));
    // Bound: one poll period (1 s) plus a request's time; generous for a loaded machine.
    assert!(took < Duration::from_secs(3), "stopped after {took:?}");
    // Other sizes are refused without reading the origin; other keys still serve.
    assert_eq!(e.get("/img/land.jpg?w=65").status, 404);
    assert_eq!(e.get("/img/land.jpg").status, 404);
    assert_eq!(
        e.metric("flexphoto_origin_fetches_total", ""),
        fetches,
        "a withheld key is never fetched again"
    );
    assert_eq!(e.get("/img/alpha.png?w=32").status, 200);
    assert_eq!(e.metric("flexphoto_withheld_keys", ""), 1.0);
    assert!(e.metric("flexphoto_withheld_purged_total", "") >= 1.0);
    // The list itself is not served.
    assert_eq!(e.get("/img/_flexphoto/withheld.json").status, 404);

    // A list that does not parse keeps the last one in force.
    std::fs::write(origin.join("_flexphoto/withheld.json"), b"{not json").unwrap();
    let start = Instant::now();
    while e.metric("flexphoto_withheld_read_errors_total", "") < 1.0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the bad list was never read"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(e.get("/img/land.jpg?w=64").status, 404);

    // A restarted edge reads the list before it serves: its disk cache does not leak.
    write_list(&origin, &["land.jpg", "alpha.png"]);
    until_status(&e, "/img/alpha.png?w=32", 404, Duration::from_secs(5));
    let e = e.restart_after_kill();
    assert_eq!(e.get("/img/alpha.png?w=32").status, 404);
    assert_eq!(e.get("/img/land.jpg?w=64").status, 404);

    // Released: served again within the poll period.
    write_list(&origin, &[]);
    until_status(&e, "/img/land.jpg?w=64", 200, Duration::from_secs(5));
    assert_eq!(e.get("/img/alpha.png?w=32").status, 200);
}

#[test]
fn withheld_list_off() {
    let origin = standard_origin("withheld-off");
    write_list(&origin, &["land.jpg"]);
    let e = Edge::start(
        &origin,
        &[("FLEXPHOTO_EDGE__WITHHELD__POLL_SECS", "0")],
        &[],
    );
    assert_eq!(e.get("/img/land.jpg?w=64").status, 200);
}

fn write_private(origin: &Path, keys: &[&str]) {
    let dir = origin.join("_flexphoto");
    std::fs::create_dir_all(&dir).unwrap();
    let body = serde_json::json!({ "version": 1, "keys": [], "signed_only": keys }).to_string();
    let tmp = dir.join("withheld.json.tmp");
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(tmp, dir.join("withheld.json")).unwrap();
}

/// Private images: once the list names a key as signed-only, unsigned requests for it are
/// refused (an unsigned preset that served before included, even from the ready fast path),
/// while other keys' presets still serve; an edge without signing keys refuses them outright.
#[test]
fn private_keys_need_a_signature() {
    let origin = standard_origin("private");
    let e = Edge::start(
        &origin,
        &[
            ("FLEXPHOTO_EDGE__WITHHELD__POLL_SECS", "1"),
            (
                "FLEXPHOTO_EDGE_SIGNING_KEYS",
                "00112233445566778899aabbccddeeff",
            ),
        ],
        &[],
    );
    let preset = "/img/land.jpg?preset=thumb";
    assert_eq!(e.get(preset).status, 200);
    assert_eq!(e.get(preset).status, 200, "kept as a ready answer");
    assert_eq!(
        e.get("/img/land.jpg?w=64").status,
        403,
        "unsigned sizes never serve"
    );
    write_private(&origin, &["land.jpg"]);
    let took = until_status(&e, preset, 403, Duration::from_secs(5));
    assert!(took < Duration::from_secs(3), "refused after {took:?}");
    let r = e.get(preset);
    assert!(r.text().contains("private"), "{}", r.text());
    assert_eq!(e.get("/img/alpha.png?preset=thumb").status, 200);
    // Public again: the preset serves again.
    write_private(&origin, &[]);
    until_status(&e, preset, 200, Duration::from_secs(5));

    // No signing keys: a private key cannot be served at all.
    let open_origin = standard_origin("private-unsigned");
    write_private(&open_origin, &["land.jpg"]);
    let open = Edge::start(
        &open_origin,
        &[("FLEXPHOTO_EDGE__WITHHELD__POLL_SECS", "1")],
        &[],
    );
    assert_eq!(open.get("/img/land.jpg?w=64").status, 403);
    assert_eq!(open.get("/img/alpha.png?w=64").status, 200);
}
