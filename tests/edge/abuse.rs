//! Attacks on an edge with its default settings: request shapes that once stalled it, work
//! that must stop at its deadline, cheap requests while the expensive lane is full, one
//! client hogging the lanes, formats that must never be decoded, and metadata privacy.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{animated_gif, make_image, temp_dir, Edge};

/// A noisy photo-like JPEG of `w`×`h` (noise keeps encoders and filters honest).
fn noisy_jpeg(w: u32, h: u32) -> Vec<u8> {
    noisy(w, h, ".jpg[Q=85]")
}

/// Noise of `w`×`h` saved with libvips' `suffix`.
fn noisy(w: u32, h: u32, suffix: &str) -> Vec<u8> {
    flexphoto_media::vips::init(1).unwrap();
    let mut px = Vec::with_capacity((w * h * 3) as usize);
    let mut s: u32 = 12345;
    for _ in 0..w * h * 3 {
        s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
        px.push((s >> 16) as u8);
    }
    let img = flexphoto_media::vips::Image::from_pixels(&px, w, h, 3).unwrap();
    img.save(suffix).unwrap().to_vec()
}

fn abuse_origin(name: &str) -> std::path::PathBuf {
    let dir = temp_dir(name);
    std::fs::write(dir.join("thin.png"), make_image(1, 1200, false, ".png")).unwrap();
    std::fs::write(dir.join("anim300.gif"), animated_gif(316, 316, 300)).unwrap();
    std::fs::write(dir.join("big.jpg"), noisy_jpeg(5000, 4000)).unwrap();
    std::fs::write(dir.join("small.jpg"), make_image(320, 240, false, ".jpg")).unwrap();
    std::fs::write(
        dir.join("drawing.svg"),
        br#"<svg xmlns="http://www.w3.org/2000/svg" width="4000" height="4000"><rect width="4000" height="4000"/></svg>"#,
    )
    .unwrap();
    dir
}

/// The three URLs that stalled an edge on its defaults are refused before any pixel work,
/// with a body naming the limit, and ordinary requests right after are served at once.
#[test]
fn the_stalling_urls_are_refused_at_once() {
    let origin = abuse_origin("abuse-caps");
    let e = Edge::start(&origin, &[], &[]);
    for path in [
        "/img/thin.png?w=8192&fit=contain",
        "/img/anim300.gif?w=8192&fit=contain&fmt=webp",
        "/img/big.jpg?w=8192&h=8192&fit=fill&blur=100&sharpen=100&fmt=png",
        "/img/big.jpg?w=6000&h=6000&fit=fill&blur=100",
        "/img/thin.png?w=8192&h=10&fit=outside",
        "/img/big.jpg?w=4096&h=4096&dpr=4&fit=cover",
        // Encoders that cannot be stopped at the deadline, over their own caps.
        "/img/big.jpg?w=5000&fmt=avif&q=99",
        "/img/big.jpg?w=5000&fmt=webp",
        "/img/big.jpg?w=5000&fmt=gif",
    ] {
        let started = Instant::now();
        let r = e.get(path);
        assert_eq!(r.status, 422, "{path}: {}", r.text());
        assert!(
            r.text().contains("limit"),
            "{path}: the body must name the limit: {}",
            r.text()
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path} took {:?}",
            started.elapsed()
        );
    }
    // An animation whose frames together exceed the cap, within it as one frame: served as
    // a still image rather than stalled.
    let r = e.get("/img/anim300.gif?w=800&fit=contain&fmt=webp");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.decode().pages, 1);
    // Within the output cap as frames, over the WebP encoder's (300 × 256² = 19.7 MP): a still.
    let r = e.get("/img/anim300.gif?w=256&fmt=webp");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.decode().pages, 1);
    // And a negotiated format that would be too slow to encode is negotiated away.
    let r = e.req(
        "GET",
        "/img/big.jpg?w=5000&fmt=auto",
        &[("Accept", "image/avif,image/webp,*/*")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    // An ordinary request right after is served at once.
    let started = Instant::now();
    let r = e.get("/img/small.jpg?w=10");
    assert_eq!(r.status, 200);
    assert!(started.elapsed() < Duration::from_secs(5));
    // Every worker is free again (the gauge drops just after the answer is sent).
    let deadline = Instant::now() + Duration::from_secs(3);
    while e.metric("flexphoto_transforms_in_flight", "") != 0.0 {
        assert!(Instant::now() < deadline, "a transform is still running");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A request within the caps but slower than its deadline answers 504 at the deadline, and
/// its worker is stopped (libvips' kill flag) and free again within a second or two.
#[test]
fn a_deadline_stops_the_work_itself() {
    let origin = abuse_origin("abuse-deadline");
    let e = Edge::start(
        &origin,
        &[
            ("FLEXPHOTO_EDGE__LIMITS__REQUEST_TIMEOUT_MS", "700"),
            ("FLEXPHOTO_EDGE__TRANSFORM__WORKERS", "1"),
            ("FLEXPHOTO_EDGE__TRANSFORM__LIGHT_WORKERS", "0"),
        ],
        &[],
    );
    // 49 MP with a sharpen of sigma 40: inside both caps, several seconds of work here.
    let started = Instant::now();
    let r = e.get("/img/big.jpg?w=7000&h=7000&fit=fill&sharpen=40&fmt=png");
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    // The worker is freed: nothing in flight within two seconds of the deadline.
    let freed = Instant::now();
    while e.metric("flexphoto_transforms_in_flight", "") > 0.0 {
        assert!(
            freed.elapsed() < Duration::from_secs(2),
            "the worker still runs {:?} after the deadline",
            freed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = e.get("/img/small.jpg?w=12");
    assert_eq!(r.status, 200, "{}", r.text());
}

/// An edge with one main worker (queue 4), one light worker and no per-client share.
fn two_lane_edge(origin: &std::path::Path) -> Arc<Edge> {
    Arc::new(Edge::start(
        origin,
        &[
            ("FLEXPHOTO_EDGE__TRANSFORM__WORKERS", "1"),
            ("FLEXPHOTO_EDGE__TRANSFORM__QUEUE", "4"),
            ("FLEXPHOTO_EDGE__TRANSFORM__LIGHT_WORKERS", "1"),
            ("FLEXPHOTO_EDGE__LIMITS__PER_CLIENT_TRANSFORMS", "0"),
        ],
        &[],
    ))
}

/// Runs `attack(edge, thread, round)` on `threads` threads, `rounds` times each at most, and
/// meanwhile `probe(edge, n)` for n in 60..70 (it asserts what it must); returns the slowest
/// probe.
fn slowest_probe_under_attack(
    e: &Arc<Edge>,
    threads: usize,
    rounds: usize,
    attack: fn(&Edge, usize, usize),
    probe: impl Fn(&Edge, u32),
) -> Duration {
    let stop = Arc::new(AtomicUsize::new(0));
    let mut running = Vec::new();
    for i in 0..threads {
        let (e, stop) = (Arc::clone(e), Arc::clone(&stop));
        running.push(std::thread::spawn(move || {
            let mut n = 0;
            while stop.load(Ordering::Relaxed) == 0 && n < rounds {
                attack(&e, i, n);
                n += 1;
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut worst = Duration::ZERO;
    for n in 60..70 {
        let started = Instant::now();
        probe(e, n);
        worst = worst.max(started.elapsed());
    }
    stop.store(1, Ordering::Relaxed);
    for t in running {
        t.join().unwrap();
    }
    worst
}

/// With the main lane full of expensive transforms, a cheap request is made on the light
/// lane and a cache hit is answered, both quickly.
#[test]
fn cheap_requests_and_hits_pass_a_full_lane() {
    let origin = abuse_origin("abuse-fair");
    let e = two_lane_edge(&origin);
    assert_eq!(e.get("/img/small.jpg?w=50").status, 200);
    // With the main lane idle, cheap work runs there (every core is used).
    assert_eq!(
        e.metric("flexphoto_transforms_by_lane_total", "lane=\"transform\""),
        1.0
    );
    let worst = slowest_probe_under_attack(
        &e,
        4,
        20,
        |e, i, n| {
            // Distinct sizes: every one is a miss on the big source.
            let w = 3000 + i * 100 + n;
            let _ = e.get(&format!("/img/big.jpg?w={w}&sharpen=5&fmt=png"));
        },
        |e, w| {
            let r = e.get(&format!("/img/small.jpg?w={w}"));
            assert_eq!(r.status, 200, "{}", r.text());
            let started = Instant::now();
            assert_eq!(e.get("/img/small.jpg?w=50").status, 200);
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "a hit waited"
            );
        },
    );
    assert!(
        worst < Duration::from_secs(3),
        "a cheap miss took {worst:?} behind expensive ones"
    );
    // While expensive work fills the main lane, cheap misses take the light one.
    assert!(
        e.metric(
            "flexphoto_transforms_by_lane_total",
            "lane=\"transform-light\""
        ) >= 1.0
    );
}

/// Costly encodes of small sources (AVIF at a size that is cheap in JPEG) and possibly
/// animated sources are not "light": they queue on the main lane, so a flood of them leaves
/// the light lane to cheap misses, which stay quick.
#[test]
fn costly_encodes_do_not_take_the_light_lane() {
    let origin = abuse_origin("abuse-light");
    // Under the light lane's source bound (2 MiB), but 2.9 MP of AVIF per request.
    std::fs::write(
        origin.join("mid.jpg"),
        make_image(1960, 1470, false, ".jpg"),
    )
    .unwrap();
    assert!(std::fs::metadata(origin.join("mid.jpg")).unwrap().len() < 2 << 20);
    let e = two_lane_edge(&origin);
    let worst = slowest_probe_under_attack(
        &e,
        3,
        4,
        |e, i, n| {
            let w = 1900 + i * 20 + n;
            let _ = e.get(&format!("/img/mid.jpg?w={w}&fmt=avif&q=90"));
            let _ = e.get(&format!("/img/anim300.gif?w={}&fmt=webp", 300 + w % 16));
        },
        |e, w| {
            let r = e.get(&format!("/img/small.jpg?w={w}&fmt=jpeg"));
            assert_eq!(r.status, 200, "{}", r.text());
        },
    );
    // Only cheap misses ran on the light lane (the 10 probes, when the main lane was full).
    assert!(
        e.metric(
            "flexphoto_transforms_by_lane_total",
            "lane=\"transform-light\""
        ) <= 10.0
    );
    assert!(
        worst < Duration::from_secs(3),
        "a cheap miss took {worst:?} behind costly encodes"
    );
}

/// One client cannot have more transforms in flight than its share: the rest get 429 with
/// `Retry-After`, never a hang.
#[test]
fn one_client_gets_its_share_and_then_429() {
    let origin = abuse_origin("abuse-client");
    let e = Arc::new(Edge::start(
        &origin,
        &[
            ("FLEXPHOTO_EDGE__LIMITS__PER_CLIENT_TRANSFORMS", "2"),
            ("FLEXPHOTO_EDGE__TRANSFORM__WORKERS", "1"),
            ("FLEXPHOTO_EDGE__TRANSFORM__LIGHT_WORKERS", "0"),
        ],
        &[],
    ));
    let mut threads = Vec::new();
    for i in 0..8 {
        let e = Arc::clone(&e);
        threads.push(std::thread::spawn(move || {
            let started = Instant::now();
            let r = e.get(&format!("/img/big.jpg?w={}&sharpen=3", 2000 + i));
            (
                r.status,
                r.header("retry-after").map(str::to_owned),
                started.elapsed(),
            )
        }));
    }
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let limited: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert!(!limited.is_empty(), "{results:?}");
    for r in &limited {
        assert!(r.1.is_some(), "429 without Retry-After");
        assert!(r.2 < Duration::from_secs(2), "a refusal waited {:?}", r.2);
    }
    // The admitted ones are made, or hit their deadline on a loaded machine.
    assert!(
        results.iter().all(|r| [200, 429, 504].contains(&r.0)),
        "{results:?}"
    );
}

/// Asks for `p0.jpg`..`p2.jpg` with `query` all at once; all must be served.
fn all_served_at_once(e: &Edge, query: &str) {
    let paths: Vec<String> = (0..3).map(|i| format!("/img/p{i}.jpg?{query}")).collect();
    assert_eq!(e.statuses_at_once(&paths), [200, 200, 200]);
}

/// Progressive JPEGs keep every DCT coefficient while they decode (~13 MB for these 4.3 MP):
/// with a decode budget of one such image, concurrent requests for three of them wait for
/// each other instead of decoding side by side, and are all served. Likewise with room for
/// one queued source.
#[test]
fn large_decodes_and_queued_sources_wait_for_their_budgets() {
    let origin = temp_dir("abuse-decode-memory");
    for i in 0..3 {
        std::fs::write(
            origin.join(format!("p{i}.jpg")),
            noisy(2400, 1800, ".jpg[Q=85,interlace]"),
        )
        .unwrap();
    }
    let e = Arc::new(Edge::start(
        &origin,
        &[
            ("FLEXPHOTO_EDGE__TRANSFORM__DECODE_MEMORY_MB", "14"),
            ("FLEXPHOTO_EDGE__TRANSFORM__WORKERS", "2"),
        ],
        &[],
    ));
    all_served_at_once(&e, "w=300&blur=4");
    let waits = e.metric("flexphoto_memory_budget_waits_total", "budget=\"decode\"");
    assert!(waits >= 1.0, "no large decode waited ({waits})");
    // Small decodes never count: a thumbnail of a small photo passes without a wait.
    std::fs::write(
        origin.join("small.jpg"),
        make_image(320, 240, false, ".jpg"),
    )
    .unwrap();
    assert_eq!(e.get("/img/small.jpg?w=100").status, 200);
    assert_eq!(
        e.metric("flexphoto_memory_budget_waits_total", "budget=\"decode\""),
        waits
    );
    drop(e);

    // Queued sources: with room for one of these sources, the others wait before they are
    // fetched, and are served.
    let e = Arc::new(Edge::start(
        &origin,
        &[("FLEXPHOTO_EDGE__TRANSFORM__QUEUED_SOURCE_MB", "1")],
        &[],
    ));
    all_served_at_once(&e, "w=200&blur=4");
    let waits = e.metric(
        "flexphoto_memory_budget_waits_total",
        "budget=\"queued_sources\"",
    );
    assert!(waits >= 1.0, "no source waited ({waits})");
}

/// Formats outside the allow-list are refused before their loader parses anything.
#[test]
fn formats_outside_the_allow_list_are_never_decoded() {
    let origin = abuse_origin("abuse-formats");
    let e = Edge::start(&origin, &[], &[]);
    let r = e.get("/img/drawing.svg?w=100");
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("svg"), "{}", r.text());
    // Narrower lists are honoured too.
    let e = Edge::start(
        &origin,
        &[("FLEXPHOTO_EDGE__LIMITS__FORMATS", "[\"png\"]")],
        &[],
    );
    let r = e.get("/img/small.jpg?w=100");
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("jpeg"), "{}", r.text());
    assert_eq!(e.get("/img/thin.png?w=1").status, 200);
}

/// Staged uploads are never served; signed answers are never cached past their expiry.
#[test]
fn hidden_keys_and_signed_expiry() {
    let origin = abuse_origin("abuse-signed");
    std::fs::create_dir_all(origin.join("uploads")).unwrap();
    std::fs::write(
        origin.join("uploads/x.jpg"),
        make_image(10, 10, false, ".jpg"),
    )
    .unwrap();
    let e = Edge::start(
        &origin,
        &[(
            "FLEXPHOTO_EDGE_SIGNING_KEYS",
            "00112233445566778899aabbccddeeff",
        )],
        &[],
    );
    let signer = flexphoto_url::Signer::new(vec![
        hex::decode("00112233445566778899aabbccddeeff").unwrap()
    ]);
    assert_eq!(
        e.get(&signer.sign_path("/img/uploads/x.jpg?w=5", 8192).unwrap())
            .status,
        404
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let path = signer
        .sign_path(&format!("/img/small.jpg?w=20&exp={}", now + 120), 8192)
        .unwrap();
    let r = e.get(&path);
    assert_eq!(r.status, 200, "{}", r.text());
    let cc = r.header("cache-control").unwrap_or("").to_owned();
    let max_age: u64 = cc
        .split("max-age=")
        .nth(1)
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(u64::MAX);
    assert!(max_age <= 120, "{cc}");
    // Unsigned is refused once keys are set, and a wrong signature too.
    assert_eq!(e.get("/img/small.jpg?w=20").status, 403);
}

/// Slow and oversized request heads are cut off, whether or not the fast path is on, and
/// connections beyond `server.max_connections` are refused with 503 at once.
#[test]
fn slow_heads_long_heads_and_connection_floods_are_bounded() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let origin = abuse_origin("abuse-slowloris");
    for fast_path in ["true", "false"] {
        let e = Edge::start(
            &origin,
            &[
                ("FLEXPHOTO_EDGE__SERVER__HEADER_TIMEOUT_SECS", "2"),
                ("FLEXPHOTO_EDGE__SERVER__FAST_PATH", fast_path),
                ("FLEXPHOTO_EDGE__SERVER__MAX_CONNECTIONS", "8"),
            ],
            &[],
        );
        // One byte every 300 ms: still inside the idle time per read, but the head as a
        // whole must arrive within 2 s of its first byte.
        let mut s = TcpStream::connect(("127.0.0.1", e.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let started = Instant::now();
        let mut closed = false;
        for b in b"GET /img/small.jpg?w=10 HTTP/1.1\r\nHost: x\r\nX-Slow: "
            .iter()
            .cycle()
        {
            if s.write_all(&[*b]).is_err() {
                closed = true;
                break;
            }
            let mut one = [0u8; 1];
            match s.read(&mut one) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) => panic!("an answer to an unfinished head"),
                Err(_) => {}
            }
            if started.elapsed() > Duration::from_secs(8) {
                break;
            }
        }
        assert!(
            closed,
            "fast path {fast_path}: a slow head kept its connection"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(e.metric("flexphoto_connections_closed_total", "reason=\"slow_head\"") >= 1.0);
        // A head that never ends is refused at 64 KiB with 431.
        let mut s = TcpStream::connect(("127.0.0.1", e.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut head = b"GET /img/small.jpg HTTP/1.1\r\n".to_vec();
        while head.len() < 70 * 1024 {
            head.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let _ = s.write_all(&head);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        assert!(
            answer.starts_with(b"HTTP/1.1 431"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        // Eight idle connections take every slot: the ninth is told to come back.
        let idle: Vec<TcpStream> = (0..8)
            .map(|_| TcpStream::connect(("127.0.0.1", e.port)).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let mut s = TcpStream::connect(("127.0.0.1", e.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(text.contains("Retry-After: 1"), "{text}");
        drop(idle);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(e.get("/img/small.jpg?w=10").status, 200);
    }
}

/// Behind a proxy, a client cannot escape its share by writing its own `X-Forwarded-For`:
/// only what the trusted proxy appended (the rightmost address) counts.
#[test]
fn forged_forwarding_headers_do_not_buy_more_shares() {
    let origin = abuse_origin("abuse-xff");
    let e = Arc::new(Edge::start(
        &origin,
        &[
            ("FLEXPHOTO_EDGE__LIMITS__PER_CLIENT_TRANSFORMS", "2"),
            ("FLEXPHOTO_EDGE__TRANSFORM__WORKERS", "1"),
            ("FLEXPHOTO_EDGE__TRANSFORM__LIGHT_WORKERS", "0"),
            (
                "FLEXPHOTO_EDGE__SERVER__CLIENT_IP_HEADER",
                "x-forwarded-for",
            ),
        ],
        &[],
    ));
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let e = Arc::clone(&e);
            std::thread::spawn(move || {
                // A fresh forged address each time, then what the proxy appended.
                let xff = format!("198.51.100.{i}, 203.0.113.7");
                e.req(
                    "GET",
                    &format!("/img/big.jpg?w={}&sharpen=3", 2100 + i),
                    &[("x-forwarded-for", &xff)],
                )
                .status
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| [200, 429, 504].contains(s)),
        "{statuses:?}"
    );
}

/// Asking again and again for a key the origin does not have costs the origin one HEAD per
/// key for a while, not one per request; an object that appears is served after that while.
#[test]
fn missing_keys_do_not_amplify_into_origin_requests() {
    let origin = abuse_origin("abuse-missing");
    let e = Edge::start(&origin, &[], &[]);
    let before = e.metric("flexphoto_origin_heads_total", "");
    for i in 0..40 {
        let r = e.get(&format!("/img/nothing-here.jpg?w={}", 10 + i));
        assert_eq!(r.status, 404, "{}", r.text());
    }
    let heads = e.metric("flexphoto_origin_heads_total", "") - before;
    assert!(heads <= 2.0, "{heads} origin HEADs for one missing key");
    // Once the object exists it is served within the missing-key window.
    std::fs::write(
        origin.join("nothing-here.jpg"),
        make_image(40, 30, false, ".jpg"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = e.get("/img/nothing-here.jpg?w=20");
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still {} after 15 s", r.status);
        std::thread::sleep(Duration::from_millis(500));
    }
}
