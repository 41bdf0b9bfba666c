//! Hostile keys and signed URLs.

use crate::harness::{standard_origin, Edge};

#[test]
fn hostile_keys_never_escape_the_origin() {
    let origin = standard_origin("hostile");
    std::fs::write(
        origin.parent().unwrap().join("secret.jpg"),
        crate::harness::make_image(10, 10, false, ".jpg"),
    )
    .unwrap();
    let e = Edge::start(&origin, &[], &[]);
    for path in [
        "/img/../secret.jpg",
        "/img/%2e%2e/secret.jpg",
        "/img/%2E%2E%2Fsecret.jpg",
        "/img/..%2fsecret.jpg",
        "/img/a/../../secret.jpg",
        "/img//etc/passwd",
        "/img/%2Fetc%2Fpasswd",
        "/img/land.jpg%00.png",
        "/img/land.jpg%00",
        "/img/..\\secret.jpg",
        "/img/%5c..%5csecret.jpg",
        "/img/./land.jpg",
        "/img/C:/windows/win.ini",
        "/img/%ff%fe.jpg",
        "/cdn-cgi/image/w=10/../secret.jpg",
        "/cdn-cgi/image/w=10/http://169.254.169.254/latest",
        "/cdn-cgi/image/w=10//etc/passwd",
    ] {
        let r = e.get(path);
        assert!(
            r.status == 400 || r.status == 404,
            "{path} gave {}: {}",
            r.status,
            r.text()
        );
    }
    // A symlink inside the origin that points outside it is not followed.
    std::os::unix::fs::symlink(
        origin.parent().unwrap().join("secret.jpg"),
        origin.join("link.jpg"),
    )
    .unwrap();
    assert_eq!(e.get("/img/link.jpg").status, 404);
}

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

#[test]
fn signed_urls_are_enforced_when_keys_are_set() {
    let origin = standard_origin("signed");
    let env = [("FLEXPHOTO_EDGE_SIGNING_KEYS", KEY)];
    let e = Edge::start(&origin, &env, &[]);
    let unsigned = e.get("/img/land.jpg?w=100");
    assert_eq!(unsigned.status, 403, "{}", unsigned.text());
    assert_eq!(
        e.get("/img/land.jpg?preset=thumb").status,
        200,
        "named presets stay open"
    );
    assert_eq!(
        e.get("/img/land.jpg?preset=thumb&w=10").status,
        403,
        "refined presets need a signature"
    );

    let sign = |path: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flexphoto-edge"))
            .args(["--config", "/dev/null", "sign", path])
            .env("FLEXPHOTO_EDGE_SIGNING_KEYS", KEY)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let signed = sign("/img/land.jpg?w=100");
    assert!(signed.contains("sig="), "{signed}");
    assert_eq!(e.get(&signed).status, 200);
    assert_eq!(e.get(&signed.replace("w=100", "w=101")).status, 403);
    let cf = sign("/cdn-cgi/image/w=100,f=webp/land.jpg");
    assert_eq!(e.get(&cf).status, 200, "{cf}");
    let expired = sign("/img/land.jpg?w=100&exp=1000");
    let r = e.get(&expired);
    assert_eq!(r.status, 403);
    assert!(r.text().contains("expired"));
    // Rotation: a URL signed with an old key still verifies while that key is listed.
    let old = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
    let e2 = Edge::start(
        &origin,
        &[("FLEXPHOTO_EDGE_SIGNING_KEYS", &format!("{KEY},{old}"))],
        &[],
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flexphoto-edge"))
        .args(["--config", "/dev/null", "sign", "/img/land.jpg?w=50"])
        .env("FLEXPHOTO_EDGE_SIGNING_KEYS", old)
        .output()
        .unwrap();
    let by_old = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(e2.get(&by_old).status, 200);
}
