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
