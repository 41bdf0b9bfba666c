//! Every error status, with a body that says what is wrong.

use std::io::Read;
use std::net::TcpListener;

use crate::harness::{standard_origin, Edge};

fn error_code(r: &crate::harness::Resp) -> String {
    let v: serde_json::Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|_| panic!("error body is JSON: {}", r.text()));
    v["error"]["code"].as_str().unwrap().to_owned()
}

#[test]
fn client_and_source_errors() {
    let origin = standard_origin("errors");
    let e = Edge::start(
        &origin,
        &[("FLEXPHOTO_EDGE__LIMITS__MAX_SOURCE_BYTES", "200000")],
        &[],
    );
    let cases: &[(&str, u16, &str)] = &[
        ("/img/land.jpg?w=abc", 400, "`w`"),
        ("/img/land.jpg?w=0", 400, "`w`"),
        ("/img/land.jpg?w=99999", 400, "`w`"),
        ("/img/land.jpg?fit=zoom", 400, "`fit`"),
        ("/img/land.jpg?g=up&fit=cover&w=1&h=1", 400, "`g`"),
        ("/img/land.jpg?q=101", 400, "`q`"),
        ("/img/land.jpg?fmt=bmp", 400, "`fmt`"),
        ("/img/land.jpg?rot=45", 400, "`rot`"),
        ("/img/land.jpg?dpr=9", 400, "`dpr`"),
        ("/img/land.jpg?bogus=1", 400, "`bogus`"),
        ("/img/land.jpg?crop=5000,5000,10,10", 400, "`crop`"),
        ("/img/missing.jpg?w=10", 404, "missing.jpg"),
        ("/nothing/here", 404, "route"),
        ("/img/truncated.jpg?w=100", 422, "decoded"),
        ("/img/text.jpg?w=100", 422, "not an image"),
        ("/img/empty.jpg", 422, "empty"),
        ("/img/bomb.png?w=10", 422, "megapixels"),
    ];
    for (path, status, needle) in cases {
        let r = e.get(path);
        assert_eq!(r.status, *status, "{path}: {}", r.text());
        assert!(
            r.text().contains(needle),
            "{path}: body {:?} lacks {needle:?}",
            r.text()
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        error_code(&r);
    }
    // Over the byte limit: a big, noisy PNG.
    let big = crate::harness::make_image(1500, 1500, true, ".png[compression=0]");
    assert!(big.len() > 200_000);
    std::fs::write(origin.join("big.png"), big).unwrap();
    let r = e.get("/img/big.png?w=10");
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(error_code(&r), "source_too_large");
    let r = e.req("POST", "/img/land.jpg", &[("Content-Length", "0")]);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
}

#[test]
fn fixture_files_refused_or_served_as_the_manifest_says() {
    let Some(fx) = crate::harness::fixtures() else {
        return;
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fx.join("manifest.json")).unwrap()).unwrap();
    let e = Edge::start(&fx, &[], &[]);
    for item in manifest.as_array().unwrap() {
        let path = item["path"].as_str().unwrap();
        if !path.starts_with("tricky/") {
            continue;
        }
        let expect = item["expect"].as_str().unwrap();
        let r = e.get(&format!("/img/{}?w=64&fmt=png", path.replace(' ', "%20")));
        if expect.starts_with("rejects") {
            assert!(
                (400..500).contains(&r.status),
                "{path} ({expect}) gave {}: {}",
                r.status,
                r.text()
            );
        } else if r.status == 200 {
            let d = r.decode();
            assert!(d.width <= 64 && d.height <= 64, "{path}");
        } else {
            // A file the manifest says decodes but libvips 8.14 cannot: a clean 422, never a 5xx.
            assert_eq!(r.status, 422, "{path}: {}", r.text());
            eprintln!(
                "note: {path} ({expect}) refused by this libvips: {}",
                r.text()
            );
        }
    }
}

#[test]
fn origin_failure_and_timeout() {
    let origin = standard_origin("originfail");
    // A port nobody listens on: connection refused.
    let closed = crate::harness::free_port();
    let s3_env = |endpoint: String| {
        vec![
            ("FLEXPHOTO_EDGE__ORIGIN__KIND".to_owned(), "s3".to_owned()),
            ("FLEXPHOTO_EDGE__ORIGIN__S3__ENDPOINT".to_owned(), endpoint),
            (
                "FLEXPHOTO_EDGE__ORIGIN__S3__BUCKET".to_owned(),
                "b".to_owned(),
            ),
            (
                "FLEXPHOTO_EDGE__ORIGIN__S3__ACCESS_KEY".to_owned(),
                "ak".to_owned(),
            ),
            (
                "FLEXPHOTO_EDGE__ORIGIN__S3__SECRET_KEY".to_owned(),
                "sk".to_owned(),
            ),
            (
                "FLEXPHOTO_EDGE__ORIGIN__TIMEOUT_MS".to_owned(),
                "3000".to_owned(),
            ),
        ]
    };
    let env = s3_env(format!("http://127.0.0.1:{closed}"));
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let e = start_without_origin_dir(&env_ref);
    let r = e.get("/img/land.jpg?w=10");
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        !r.text().contains("127.0.0.1"),
        "no internals leak: {}",
        r.text()
    );
    drop(e);

    // A server that accepts and never answers: timeout.
    let hang = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hang.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in hang.incoming().flatten() {
            let mut s2 = s;
            let mut buf = [0u8; 1024];
            let _ = s2.read(&mut buf);
            held.push(s2);
        }
    });
    let env = s3_env(format!("http://127.0.0.1:{port}"));
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let e = start_without_origin_dir(&env_ref);
    let r = e.get("/img/land.jpg?w=10");
    assert_eq!(r.status, 504, "{}", r.text());
    let _ = origin;
}

fn start_without_origin_dir(env: &[(&str, &str)]) -> Edge {
    Edge::start_configured(env)
}
