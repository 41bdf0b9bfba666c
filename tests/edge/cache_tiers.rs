//! Disk tier, crash safety, coalescing, backpressure and stale-if-error.

use std::time::Duration;

use crate::harness::{make_image, standard_origin, temp_dir, Edge};

fn wait_for_files(dir: &std::path::Path, at_least: usize) {
    for _ in 0..100 {
        let n = walk(dir).len();
        if n >= at_least {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                // Temp files and remembered source identities are not cache entries.
                if p.file_name()
                    .is_some_and(|n| n != "tmp" && n != "identities")
                {
                    out.extend(walk(&p));
                }
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn disk_tier_survives_restart_and_promotes_to_memory() {
    let origin = standard_origin("disk");
    let cache = temp_dir("disk-cache");
    let e = Edge::start(&origin, &[], &["--cache-dir", cache.to_str().unwrap()]);
    let first = e.get("/img/land.jpg?w=150");
    assert_eq!(first.header("x-cache"), Some("miss"));
    wait_for_files(&cache, 1);
    let e = e.restart_after_kill();
    let again = e.get("/img/land.jpg?w=150");
    assert_eq!(again.header("x-cache"), Some("disk"));
    assert_eq!(again.body, first.body);
    assert_eq!(
        e.get("/img/land.jpg?w=150").header("x-cache"),
        Some("memory")
    );
    assert!(e.metric("flexphoto_disk_cache_bytes", "") > 0.0);
}

/// A source the origin says is gone is never served again from the disk tier: not before a
/// restart once its identity is checked again, and not after one, when the identity the disk
/// tier remembers is all the edge has; its disk entries are dropped.
#[test]
fn a_source_gone_from_the_origin_is_not_served_from_disk() {
    let origin = standard_origin("gone");
    let cache = temp_dir("gone-cache");
    let e = Edge::start(
        &origin,
        &[("FLEXPHOTO_EDGE__ORIGIN__REVALIDATE_SECS", "1")],
        &["--cache-dir", cache.to_str().unwrap()],
    );
    assert_eq!(e.get("/img/land.jpg?w=150").status, 200);
    assert_eq!(e.get("/img/alpha.png?w=40").status, 200);
    wait_for_files(&cache, 2);
    let entries = walk(&cache).len();
    std::fs::remove_file(origin.join("land.jpg")).unwrap();
    // After a restart the only identity is the one the disk tier kept.
    let e = e.restart_after_kill();
    let r = e.get("/img/land.jpg?w=150");
    assert_eq!(
        r.status,
        404,
        "served {:?} after the source was deleted",
        r.header("x-cache")
    );
    assert_eq!(e.get("/img/land.jpg?w=150").status, 404);
    assert_eq!(e.get("/img/alpha.png?w=40").header("x-cache"), Some("disk"));
    let start = std::time::Instant::now();
    while walk(&cache).len() >= entries {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the gone source's disk entry stayed: {:?}",
            walk(&cache)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Without a restart: once the identity is due for a check, the deletion is seen.
    assert_eq!(e.get("/img/alpha.png?w=41").status, 200);
    std::fs::remove_file(origin.join("alpha.png")).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(e.get("/img/alpha.png?w=41").status, 404);
    assert_eq!(e.get("/img/alpha.png?w=40").status, 404);
}

/// A full cache disk: misses are still answered (from the origin) and hits from memory, the
/// failures are counted and logged once, and writes resume when there is room again.
#[test]
fn a_full_cache_disk_is_served_around() {
    let Some(disk) = crate::tiny_disk::TinyDisk::mount(2, "the full edge disk test") else {
        return;
    };
    let origin = standard_origin("full-disk");
    let cache = disk.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    // Fill the disk with something that is not the cache's.
    let filler = disk.path().join("filler");
    let _ = std::fs::write(&filler, vec![7u8; 2 << 20]);
    let e = Edge::start(&origin, &[], &["--cache-dir", cache.to_str().unwrap()]);
    for w in 100..110 {
        let r = e.get(&format!("/img/land.jpg?w={w}&fmt=png"));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let hit = e.get("/img/land.jpg?w=100&fmt=png");
    assert_eq!(hit.header("x-cache"), Some("memory"));
    let start = std::time::Instant::now();
    while e.metric("flexphoto_disk_cache_write_failures_total", "") < 1.0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no write failure counted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(walk(&cache).is_empty(), "{:?}", walk(&cache));
    // Room again: new entries reach the disk.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(e.get("/img/land.jpg?w=120&fmt=png").status, 200);
    wait_for_files(&cache, 1);
    assert!(!walk(&cache).is_empty(), "writes did not resume");
}

#[test]
fn kill_during_cache_writes_never_serves_truncated_bytes() {
    let origin = standard_origin("crash");
    let cache = temp_dir("crash-cache");
    let e = Edge::start(&origin, &[], &["--cache-dir", cache.to_str().unwrap()]);
    let urls: Vec<String> = (0..24)
        .map(|i| {
            format!(
                "/img/land.jpg?w={}&fmt={}",
                300 + i,
                ["jpeg", "webp", "png"][i % 3]
            )
        })
        .collect();
    let port = e.port;
    let handles: Vec<_> = urls
        .iter()
        .cloned()
        .map(|u| std::thread::spawn(move || crate::harness::try_request(port, "GET", &u, &[])))
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    let e = {
        // SIGKILL in the middle of the burst.
        let e = e.restart_after_kill();
        for h in handles {
            let _ = h.join();
        }
        e
    };
    // Damage one entry by hand, as a torn write on a lying disk would.
    let mut files = walk(&cache);
    files.sort();
    if let Some(f) = files.first() {
        let raw = std::fs::read(f).unwrap();
        std::fs::write(f, &raw[..raw.len() / 2]).unwrap();
    }
    let e = e.restart_after_kill();
    for u in &urls {
        let r = e.get(u);
        assert_eq!(r.status, 200, "{u}");
        assert_eq!(
            r.header("content-length").unwrap(),
            r.body.len().to_string()
        );
        let d = r.decode(); // decodes every pixel, so truncation would fail here
        assert_eq!(
            d.width,
            u.split("w=")
                .nth(1)
                .unwrap()
                .split('&')
                .next()
                .unwrap()
                .parse::<u32>()
                .unwrap()
        );
    }
}

#[test]
fn concurrent_requests_share_one_fetch_and_one_transform() {
    let origin = standard_origin("coalesce");
    std::fs::write(
        origin.join("big.jpg"),
        make_image(3000, 2000, false, ".jpg[Q=95]"),
    )
    .unwrap();
    let e = Edge::start(&origin, &[], &[]);
    let port = e.port;
    let same: Vec<_> = (0..10)
        .map(|_| {
            std::thread::spawn(move || {
                crate::harness::request(port, "GET", "/img/big.jpg?w=1500&blur=4", &[])
            })
        })
        .collect();
    let bodies: Vec<_> = same.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(bodies
        .iter()
        .all(|r| r.status == 200 && r.body == bodies[0].body));
    assert_eq!(e.metric("flexphoto_origin_fetches_total", ""), 1.0);
    assert_eq!(
        e.metric("flexphoto_transform_seconds_count", ""),
        1.0,
        "one transform for ten requests"
    );
    // Different sizes of one new source: one fetch between them.
    std::fs::write(
        origin.join("big2.jpg"),
        make_image(3000, 2000, false, ".jpg[Q=95]"),
    )
    .unwrap();
    let sizes: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                crate::harness::request(
                    port,
                    "GET",
                    &format!("/img/big2.jpg?w={}", 100 + i * 10),
                    &[],
                )
            })
        })
        .collect();
    for h in sizes {
        assert_eq!(h.join().unwrap().status, 200);
    }
    assert_eq!(e.metric("flexphoto_origin_fetches_total", ""), 2.0);
}

#[test]
fn overload_answers_503_while_hits_keep_flowing() {
    let origin = standard_origin("overload");
    std::fs::write(
        origin.join("big.jpg"),
        make_image(2500, 2500, false, ".jpg[Q=95]"),
    )
    .unwrap();
    let e = Edge::start(
        &origin,
        &[
            ("FLEXPHOTO_EDGE__TRANSFORM__WORKERS", "1"),
            ("FLEXPHOTO_EDGE__TRANSFORM__QUEUE", "1"),
            // Admitted work must finish even on a loaded machine: this test is about the
            // queue, not the deadline.
            ("FLEXPHOTO_EDGE__LIMITS__REQUEST_TIMEOUT_MS", "300000"),
        ],
        &[],
    );
    assert_eq!(e.get("/img/land.jpg?w=50").status, 200);
    let port = e.port;
    let storm: Vec<_> = (0..12)
        .map(|i| {
            std::thread::spawn(move || {
                crate::harness::request(
                    port,
                    "GET",
                    &format!("/img/big.jpg?w={}&blur=40", 2000 + i),
                    &[],
                )
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    let hit = e.get("/img/land.jpg?w=50");
    assert_eq!(hit.status, 200);
    assert_eq!(hit.header("x-cache"), Some("memory"));
    let results: Vec<_> = storm.into_iter().map(|h| h.join().unwrap()).collect();
    let rejected: Vec<_> = results.iter().filter(|r| r.status == 503).collect();
    assert!(
        !rejected.is_empty(),
        "statuses {:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(rejected.iter().all(|r| r.header("retry-after").is_some()));
    assert!(results.iter().all(|r| r.status == 200 || r.status == 503));
    assert!(e.metric("flexphoto_queue_rejections_total", "") >= rejected.len() as f64);
}

#[test]
fn large_sources_get_a_working_copy_that_serves_smaller_sizes() {
    let origin = standard_origin("working");
    let direct = Edge::start(&origin, &[("FLEXPHOTO_EDGE__CACHE__WORKING_MB", "0")], &[]);
    // 1200x800 source. A 300x200 copy (no smaller levels) serves sizes up to 150 wide; a
    // 1000x667 copy also has levels of 707, 500 and 354 px, and each request uses the
    // smallest level at least twice its output.
    for side in ["300", "1000"] {
        let e = Edge::start(
            &origin,
            &[
                ("FLEXPHOTO_EDGE__TRANSFORM__WORKING_SIDE", side),
                ("FLEXPHOTO_EDGE__TRANSFORM__ALLOW_META_KEEP", "true"),
            ],
            &[],
        );
        // Alpha sources too: flattened for JPEG, kept for WebP and PNG.
        for (file, q) in [
            ("land.jpg", "w=120"),
            ("land.jpg", "w=100&h=100&fit=cover"),
            ("land.jpg", "w=90&h=90&fit=cover&g=se"),
            ("land.jpg", "h=50&fmt=webp"),
            ("land.jpg", "w=140&h=60&fit=fill"),
            ("alpha.png", "w=100&fmt=jpeg"),
            ("alpha.png", "w=120&fmt=webp"),
            ("alpha.png", "w=90&fmt=png"),
        ] {
            let a = e.get(&format!("/img/{file}?{q}"));
            let b = direct.get(&format!("/img/{file}?{q}"));
            assert_eq!(a.status, 200, "{q}");
            let (da, db) = (a.decode(), b.decode());
            assert_eq!(
                (da.width, da.height, da.loader.clone(), da.bands),
                (db.width, db.height, db.loader.clone(), db.bands),
                "side {side}, {file}?{q}"
            );
            // Same picture: mean absolute difference of the pixels stays small.
            let diff: u64 = da
                .pixels
                .iter()
                .zip(&db.pixels)
                .map(|(x, y)| (*x as i32 - *y as i32).unsigned_abs() as u64)
                .sum();
            let mad = diff as f64 / da.pixels.len() as f64;
            assert!(mad < 6.0, "side {side}, {file}?{q}: mean abs diff {mad}");
        }
        assert!(
            e.metric(
                "flexphoto_cache_lookups_total",
                "result=\"hit\",tier=\"working\""
            ) >= 3.0
        );
        assert_eq!(e.metric("flexphoto_origin_fetches_total", ""), 2.0);
        // Larger outputs and metadata requests still use the original.
        assert_eq!(e.get("/img/land.jpg?w=600").decode().width, 600);
        assert_eq!(e.get("/img/land.jpg?w=100&meta=keep").status, 200);
    }
}

#[test]
fn source_byte_budget_refuses_what_would_not_fit() {
    let origin = standard_origin("budget");
    for i in 0..4 {
        std::fs::write(
            origin.join(format!("noisy{i}.png")),
            make_image(1200, 1200, false, ".png[compression=0]"),
        )
        .unwrap();
    }
    let e = Edge::start(
        &origin,
        &[("FLEXPHOTO_EDGE__LIMITS__INFLIGHT_SOURCE_MB", "5")],
        &[],
    );
    let paths: Vec<String> = (0..4)
        .map(|i| format!("/img/noisy{i}.png?w=1100&blur=30"))
        .collect();
    let statuses = e.statuses_at_once(&paths);
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&503),
        "4 x 4.3 MB sources cannot all fit a 5 MB budget: {statuses:?}"
    );
    assert!(statuses.contains(&200), "{statuses:?}");
    // Once the burst is over the budget is free again.
    assert_eq!(e.get("/img/noisy3.png?w=64").status, 200);
}
