//! ETag, 304, Cache-Control, Vary, HEAD, Content-Length and the tier header.

use crate::harness::{standard_origin, Edge};

#[test]
fn etag_304_head_and_tiers() {
    let origin = standard_origin("http");
    let e = Edge::start(&origin, &[], &[]);
    let first = e.get("/img/land.jpg?w=200");
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-cache"), Some("miss"));
    assert!(first.header("cache-status").unwrap().contains("fwd=miss"));
    assert_eq!(
        first.header("content-length").unwrap(),
        first.body.len().to_string()
    );
    assert_eq!(first.header("cache-control"), Some("public, max-age=86400"));
    assert!(first.header("vary").is_none(), "no Vary without fmt=auto");
    let etag = first.header("etag").unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"));

    let second = e.get("/img/land.jpg?w=200");
    assert_eq!(second.header("x-cache"), Some("memory"));
    assert_eq!(second.body, first.body);
    // Equivalent spelling, same entry.
    let alias = e.get("/img/land.jpg?width=100&dpr=2&fit=scale-down");
    assert_eq!(alias.header("etag"), Some(etag.as_str()));

    let nm = e.req("GET", "/img/land.jpg?w=200", &[("If-None-Match", &etag)]);
    assert_eq!(nm.status, 304);
    assert!(nm.body.is_empty());
    assert_eq!(nm.header("etag"), Some(etag.as_str()));
    let nm = e.req(
        "GET",
        "/img/land.jpg?w=200",
        &[("If-None-Match", "\"other\", W/".to_owned().as_str())],
    );
    assert_eq!(nm.status, 200);

    let head = e.req("HEAD", "/img/land.jpg?w=200", &[]);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length").unwrap(),
        first.body.len().to_string()
    );
    assert_eq!(head.header("content-type"), Some("image/jpeg"));

    // A changed original gets a new ETag (after revalidation; purge-free via a new key here).
    let auto = e.req(
        "GET",
        "/img/land.jpg?w=200&fmt=auto",
        &[("Accept", "image/webp")],
    );
    assert_eq!(auto.header("vary"), Some("Accept"));
    assert_ne!(auto.header("etag"), Some(etag.as_str()));
}

#[test]
fn changed_original_is_not_served_stale() {
    let origin = standard_origin("changed");
    let e = Edge::start(
        &origin,
        &[("FLEXPHOTO_EDGE__ORIGIN__REVALIDATE_SECS", "0")],
        &[],
    );
    let a = e.get("/img/land.jpg?w=100");
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(
        origin.join("land.jpg"),
        crate::harness::make_image(500, 500, false, ".jpg"),
    )
    .unwrap();
    let b = e.get("/img/land.jpg?w=100");
    assert_ne!(a.header("etag"), b.header("etag"));
    assert_eq!((b.decode().width, b.decode().height), (100, 100));
}

/// One keep-alive connection that reads answers by their Content-Length.
struct Conn {
    socket: std::net::TcpStream,
    raw: Vec<u8>,
}

impl Conn {
    fn open(port: u16) -> Conn {
        let socket = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        Conn {
            socket,
            raw: Vec::new(),
        }
    }

    /// Writes `requests` at once (pipelined when more than one); their answers, in order.
    fn send(&mut self, requests: &[String]) -> Vec<(u16, Vec<u8>)> {
        use std::io::{Read, Write};
        self.socket.write_all(requests.concat().as_bytes()).unwrap();
        let mut answers = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            // Take every complete answer off the front.
            while let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.raw[..end]).to_ascii_lowercase();
                let status: u16 = head[9..12].parse().unwrap();
                let is_head = requests[answers.len()].starts_with("HEAD");
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .filter(|_| !is_head && status != 304)
                    .map_or(0, |v| v.trim().parse().unwrap());
                if self.raw.len() < end + 4 + len {
                    break;
                }
                answers.push((status, self.raw[end + 4..end + 4 + len].to_vec()));
                self.raw.drain(..end + 4 + len);
                if answers.len() == requests.len() {
                    return answers;
                }
            }
            let n = self.socket.read(&mut buf).unwrap();
            assert!(n > 0, "connection closed after {} answers", answers.len());
            self.raw.extend_from_slice(&buf[..n]);
        }
    }
}

fn without_date(r: &crate::harness::Resp) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = r
        .headers
        .iter()
        .filter(|(k, _)| k.as_str() != "date")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    h.sort();
    h
}

#[test]
fn ready_answers_are_the_normal_paths_answers() {
    // Three edges over one origin, the fast path on and off, and the fast path on Pingora's
    // work-stealing runtime instead of connection threads: every answer the same but Date.
    let origin = standard_origin("ready");
    let fast = Edge::start(&origin, &[], &[]);
    let slow = Edge::start(
        &origin,
        &[("FLEXPHOTO_EDGE__SERVER__FAST_PATH", "false")],
        &[],
    );
    let stealing = Edge::start(
        &origin,
        &[("FLEXPHOTO_EDGE__SERVER__WORK_STEALING", "true")],
        &[],
    );
    let webp = [("Accept", "image/avif;q=0,image/webp,*/*")];
    let jpeg = [("Accept", "image/jpeg,*/*")];
    for e in [&fast, &slow, &stealing] {
        for _ in 0..2 {
            e.get("/img/land.jpg?w=120");
            e.req("GET", "/img/land.jpg?w=120&fmt=auto", &webp);
            e.req("GET", "/img/land.jpg?w=120&fmt=auto", &jpeg);
        }
    }
    let etag = fast
        .get("/img/land.jpg?w=120")
        .header("etag")
        .unwrap()
        .to_owned();
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        ("GET", "/img/land.jpg?w=120", vec![]),
        ("HEAD", "/img/land.jpg?w=120", vec![]),
        ("GET", "/img/land.jpg?w=120", vec![("If-None-Match", &etag)]),
        (
            "HEAD",
            "/img/land.jpg?w=120",
            vec![("If-None-Match", &etag)],
        ),
        (
            "GET",
            "/img/land.jpg?w=120",
            vec![("If-None-Match", "\"x\", *")],
        ),
        (
            "GET",
            "/img/land.jpg?w=120",
            vec![("If-None-Match", "\"other\"")],
        ),
        ("GET", "/img/land.jpg?w=120&fmt=auto", webp.to_vec()),
        ("GET", "/img/land.jpg?w=120&fmt=auto", jpeg.to_vec()),
    ];
    let before = [&fast, &stealing].map(|e| e.metric("flexphoto_ready_hits_total", ""));
    for (method, path, headers) in &cases {
        let b = slow.req(method, path, headers);
        for e in [&fast, &stealing] {
            let a = e.req(method, path, headers);
            let what = format!("{method} {path} {headers:?}");
            assert_eq!(a.status, b.status, "{what}");
            assert_eq!(without_date(&a), without_date(&b), "{what}");
            assert_eq!(a.body, b.body, "{what}");
            assert!(a.header("date").is_some(), "{what}");
        }
    }
    for (e, before) in [&fast, &stealing].into_iter().zip(before) {
        assert_eq!(
            e.metric("flexphoto_ready_hits_total", "") - before,
            cases.len() as f64,
            "every case was answered by the fast path"
        );
    }
    assert_eq!(slow.metric("flexphoto_ready_hits_total", ""), 0.0);
    // Vary: each Accept got its own format.
    let w = fast.req("GET", "/img/land.jpg?w=120&fmt=auto", &webp);
    let j = fast.req("GET", "/img/land.jpg?w=120&fmt=auto", &jpeg);
    assert_eq!(w.header("content-type"), Some("image/webp"));
    assert_eq!(j.header("content-type"), Some("image/jpeg"));
    assert_eq!(w.header("vary"), Some("Accept"));
    assert_ne!(w.header("etag"), j.header("etag"));
}

#[test]
fn ready_answers_keep_alive_and_pipelining_order() {
    let origin = standard_origin("ready-pipe");
    // Ready answers live as long as the source's identity is trusted: long enough here that a
    // slow miss on a loaded machine cannot expire the first one mid-test.
    let e = Edge::start(
        &origin,
        &[("FLEXPHOTO_EDGE__ORIGIN__REVALIDATE_SECS", "3600")],
        &[],
    );
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let head = |path: &str| format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let img = "/img/land.jpg?w=90";
    let mut c = Conn::open(e.port);
    // Miss, then a hit through the normal path: both on one kept-alive connection.
    let first = c.send(&[get(img)]).remove(0);
    assert_eq!(c.send(&[get(img)]), std::slice::from_ref(&first));
    assert_eq!(e.metric("flexphoto_ready_hits_total", ""), 0.0);
    // Ready answers, pipelined, in order; then the normal path on the same connection.
    let answers = c.send(&[get(img), head(img), get(img)]);
    assert_eq!(answers, [first.clone(), (200, Vec::new()), first.clone()]);
    assert_eq!(c.send(&[get("/healthz")]), [(200, b"ok\n".to_vec())]);
    let other = c.send(&[get("/img/land.jpg?w=91")]).remove(0);
    assert_eq!(other.0, 200);
    assert_ne!(other.1, first.1);
    assert_eq!(c.send(&[get(img)]), [first]);
    assert_eq!(e.metric("flexphoto_ready_hits_total", ""), 4.0);
}

#[test]
fn purge_and_a_changed_original_end_ready_answers() {
    let origin = standard_origin("ready-purge");
    let e = Edge::start(
        &origin,
        &[("FLEXPHOTO_EDGE__SERVER__ADMIN_TOKEN", "s3cret-token")],
        &[],
    );
    let path = "/img/land.jpg?w=64";
    for _ in 0..3 {
        e.get(path);
    }
    assert_eq!(e.metric("flexphoto_ready_hits_total", ""), 1.0);
    let r = e.req(
        "POST",
        "/admin/purge?key=land.jpg",
        &[
            ("Authorization", "Bearer s3cret-token"),
            ("Content-Length", "0"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(e.get(path).header("x-cache"), Some("miss"));
    assert_eq!(e.metric("flexphoto_ready_hits_total", ""), 1.0);

    // A ready answer lives no longer than its source's identity is trusted.
    let e = Edge::start(
        &origin,
        &[("FLEXPHOTO_EDGE__ORIGIN__REVALIDATE_SECS", "1")],
        &[],
    );
    let old = e.get(path);
    e.get(path);
    assert_eq!(e.get(path).body, old.body);
    assert_eq!(e.metric("flexphoto_ready_hits_total", ""), 1.0);
    std::fs::write(
        origin.join("land.jpg"),
        crate::harness::make_image(300, 200, false, ".jpg"),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let new = e.get(path);
    assert_ne!(new.header("etag"), old.header("etag"));
    assert_eq!(new.decode().width, 64);
}
