//! Attacks on the control plane: key management beyond a key's scope, review decisions by
//! the wrong people, request floods, oversized and slow bodies, swapped presigned uploads,
//! bytes that are not images, and deletes that must leave nothing behind.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use serde_json::{json, Value};

use crate::helpers::{backends, jpeg, sample, App, Backend, Options, ADMIN};

/// A presigned upload of `data` for `owner`: created (201), PUT to its URL, completed (202);
/// returns the image id.
async fn presign_put_and_complete(app: &App, owner: &str, ctype: &str, data: Vec<u8>) -> String {
    let (s, v) = app
        .post_json(
            "/v1/images",
            ADMIN,
            &json!({"owner": owner, "content_type": ctype, "size": data.len()}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    assert!(put_bytes(&v, data).await < 300);
    let (s, c) = app
        .post_json(&format!("/v1/images/{id}/complete"), ADMIN, &json!({}))
        .await;
    assert_eq!(s, 202, "{c}");
    id
}

async fn put_bytes(created: &Value, data: Vec<u8>) -> u16 {
    let url = created["upload"]["url"].as_str().unwrap();
    let headers: Vec<(String, String)> = created["upload"]["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .filter(|(k, _)| k != "content-length")
        .collect();
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    crate::helpers::send(
        Method::PUT,
        url,
        &h,
        Bytes::from(data),
        Duration::from_secs(30),
    )
    .await
    .unwrap()
    .status
}

/// A key never reaches past itself: scoped keys mint only scoped keys of their role or below,
/// and list and revoke only the keys they manage.
#[tokio::test]
async fn keys_stay_within_their_scope_and_role() {
    let app = App::spawn(Options::new(Backend::Sqlite)).await;
    let alice_admin = app.key("admin", Some("alice")).await;
    let bob_up = app.key("uploader", Some("bob")).await;
    // A scoped admin cannot mint an unscoped key or one for another owner.
    let (s, v) = app
        .post_json(
            "/v1/keys",
            &alice_admin,
            &json!({"name": "x", "role": "viewer", "owner": "bob"}),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = app
        .post_json(
            "/v1/keys",
            &alice_admin,
            &json!({"name": "x", "role": "viewer"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        v["owner"], "alice",
        "a scoped key's keys are in its scope: {v}"
    );
    // An uploader cannot mint a key of a higher role.
    for role in ["admin", "reviewer"] {
        let (s, v) = app
            .post_json("/v1/keys", &bob_up, &json!({"name": "x", "role": role}))
            .await;
        assert_eq!(s, 403, "{role}: {v}");
    }
    let (s, bob_viewer) = app
        .post_json(
            "/v1/keys",
            &bob_up,
            &json!({"name": "bob's viewer", "role": "viewer"}),
        )
        .await;
    assert_eq!(s, 201, "{bob_viewer}");
    // Listing: secrets never shown; each key sees only what it manages.
    let (s, all) = app.get_json("/v1/keys", ADMIN).await;
    assert_eq!(s, 200);
    assert!(!all.to_string().contains("fpk_"), "a secret leaked: {all}");
    assert!(all["items"].as_array().unwrap().len() >= 5, "{all}");
    let (_, alices) = app.get_json("/v1/keys", &alice_admin).await;
    assert!(
        alices["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["owner"] == "alice"),
        "{alices}"
    );
    let (_, bobs) = app.get_json("/v1/keys", &bob_up).await;
    assert_eq!(bobs["items"].as_array().unwrap().len(), 1, "{bobs}");
    // Revoking outside the scope looks like a missing key.
    let bob_viewer_id = bob_viewer["id"].as_str().unwrap();
    let r = app
        .delete(&format!("/v1/keys/{bob_viewer_id}"), &alice_admin)
        .await;
    assert_eq!(r.status, 404);
    let r = app
        .delete(&format!("/v1/keys/{bob_viewer_id}"), &bob_up)
        .await;
    assert_eq!(r.status, 204);
    app.cleanup().await;
}

/// Approving needs the reviewer role, and nobody approves what their own key uploaded.
#[tokio::test]
async fn review_decisions_need_a_reviewer_who_did_not_upload() {
    let app = App::spawn(Options::new(Backend::Sqlite)).await;
    let uploader = app.key("uploader", Some("rita")).await;
    let reviewer = app.key("reviewer", None).await;
    let id = app
        .upload_ready(&uploader, "rita", "r.jpg", &jpeg(64, 48, 41))
        .await;
    let approve = json!({"review_state": "approved", "reason": "looks fine"});
    let path = format!("/v1/images/{id}");
    assert_eq!(
        app.patch_json(&path, &uploader, &approve).await.status,
        403,
        "an uploader approved"
    );
    // A reviewer who uploaded the image may not approve it either.
    let own = app
        .upload_ready(&reviewer, "rita", "own.jpg", &jpeg(64, 48, 42))
        .await;
    let r = app
        .patch_json(&format!("/v1/images/{own}"), &reviewer, &approve)
        .await;
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    // Another reviewer may; the decision is in the history.
    let r = app.patch_json(&path, &reviewer, &approve).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (_, h) = app
        .get_json(&format!("/v1/images/{id}/history"), ADMIN)
        .await;
    assert_eq!(h["review_state"], "approved", "{h}");
    // Captions and tags stay the uploader's to change.
    let r = app
        .patch_json(&path, &uploader, &json!({"caption": "mine"}))
        .await;
    assert_eq!(r.status, 200);
    app.cleanup().await;
}

/// A second key is no second person: a reviewer that uploaded an image and minted another
/// reviewer key cannot approve the image with it (nor with a sibling key it minted, nor can
/// the key that created the uploader's decide), on the image PATCH and on bulk decisions. A
/// reviewer an admin handed out still can.
#[tokio::test]
async fn minted_keys_cannot_approve_their_lineages_uploads() {
    for backend in backends() {
        let app = App::spawn(Options::new(backend)).await;
        let rita = app.key("reviewer", None).await;
        let other = app.key("reviewer", None).await;
        let id = app
            .upload_ready(&rita, "rita", "r.jpg", &jpeg(64, 48, 43))
            .await;
        let mint = |name: &'static str, by: String| {
            let app = &app;
            async move {
                let (s, v) = app
                    .post_json("/v1/keys", &by, &json!({"name": name, "role": "reviewer"}))
                    .await;
                assert_eq!(s, 201, "{v}");
                assert!(v["created_by"].is_string(), "{v}");
                v["key"].as_str().unwrap().to_owned()
            }
        };
        let rita2 = mint("rita's second key", rita.clone()).await;
        let rita3 = mint("rita's third key", rita.clone()).await;
        let rita4 = mint("minted from the second", rita2.clone()).await;
        let approve = json!({"review_state": "approved", "reason": "looks fine"});
        for key in [&rita2, &rita3, &rita4, &ADMIN.to_owned()] {
            let r = app
                .patch_json(&format!("/v1/images/{id}"), key, &approve)
                .await;
            let body = String::from_utf8_lossy(&r.body);
            assert_eq!(r.status, 403, "{backend:?}: {body}");
            assert!(body.contains("uploader's lineage"), "{body}");
        }
        // Bulk decisions: submitted for review, then the same keys are refused item by item.
        let (s, v) = app
            .post_json(
                &format!("/v1/images/{id}/workflow"),
                &rita,
                &json!({"to": "in_review"}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let decide = |key: String, version: i64| {
            let app = &app;
            let id = id.clone();
            async move {
                app.post_json(
                    "/v1/review/decisions",
                    &key,
                    &json!({"action": "approve", "reason": "ok",
                            "items": [{"id": id, "version": version}]}),
                )
                .await
            }
        };
        let version = v["version"].as_i64().unwrap();
        for key in [&rita2, &rita3, &rita4] {
            let (s, r) = decide(key.clone(), version).await;
            assert_eq!(s, 207, "{backend:?}: {r}");
            assert_eq!(r["results"][0]["status"], 403, "{r}");
            let msg = r["results"][0]["message"].as_str().unwrap();
            assert!(msg.contains("uploader's lineage"), "{msg}");
        }
        // The other way round: what the minted key uploads, its creator cannot approve.
        let id2 = app
            .upload_ready(&rita2, "rita", "r2.jpg", &jpeg(64, 48, 44))
            .await;
        let r = app
            .patch_json(&format!("/v1/images/{id2}"), &rita, &approve)
            .await;
        assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
        // A reviewer the admin handed out decides.
        let (s, r) = decide(other.clone(), version).await;
        assert_eq!(s, 200, "{backend:?}: {r}");
        app.cleanup().await;
    }
}

/// A flooding key gets 429 with `Retry-After`; small routes refuse large bodies; a client
/// that dribbles its headers is cut off.
#[tokio::test]
async fn floods_large_bodies_and_slow_clients_are_bounded() {
    let app = App::spawn(
        Options::new(Backend::Sqlite)
            .env("FLEXPHOTO__SERVER__RATE_PER_KEY", "5")
            .env("FLEXPHOTO__SERVER__HEADER_TIMEOUT_SECS", "2"),
    )
    .await;
    let viewer = app.key("viewer", None).await;
    let mut limited = None;
    for _ in 0..40 {
        let r = app
            .req(
                Method::GET,
                "/v1/images?owner=x",
                Some(&viewer),
                None,
                Bytes::new(),
            )
            .await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("40 requests at once were never limited");
    assert!(r.headers.get("retry-after").is_some());
    // Another key is not held up by it.
    assert_eq!(app.get_json("/v1/jobs/stats", ADMIN).await.0, 200);
    // A JSON body over the JSON limit on a small route.
    let big = format!("{{\"caption\": \"{}\"}}", "x".repeat(2 << 20));
    let r = app
        .req(
            Method::PATCH,
            "/v1/images/00000000-0000-0000-0000-000000000000",
            Some(ADMIN),
            Some("application/json"),
            Bytes::from(big),
        )
        .await;
    assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));
    // Slowloris: half a request line, then nothing; the server closes within its timeout.
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap_or(0);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "a slow client held the connection for {:?} (read {n} bytes)",
        started.elapsed()
    );
    app.cleanup().await;
}

/// Guessing credentials is braked per client address before the database is asked: bad
/// bearers, bad session cookies and failed sign-ins all count, and a key that authenticated
/// before keeps working.
#[tokio::test]
async fn failed_authentications_are_limited_per_client_address() {
    let app = App::spawn(
        Options::new(Backend::Sqlite).env("FLEXPHOTO__SERVER__FAILED_AUTH_PER_MINUTE", "10"),
    )
    .await;
    // The admin key authenticates once before the guessing starts; the viewer key is made
    // but never used.
    let viewer = app.key("viewer", None).await;
    let (mut unauthorized, mut limited, mut retry_after) = (0, 0, None);
    for _ in 0..40 {
        let guess = format!("fpk_{}", uuid::Uuid::new_v4().simple());
        let r = app
            .req(
                Method::GET,
                "/v1/jobs/stats",
                Some(&guess),
                None,
                Bytes::new(),
            )
            .await;
        match r.status {
            401 => unauthorized += 1,
            429 => {
                limited += 1;
                retry_after = r.headers.get("retry-after").cloned();
                assert_eq!(crate::helpers::json_of(&r)["error"]["code"], "rate_limited");
            }
            s => panic!("a guessed key got {s}"),
        }
    }
    // 10 a minute: a token comes back every 6 s, so at most a couple more than 10 get through.
    assert!(
        (10..=12).contains(&unauthorized),
        "{unauthorized} guesses were looked up, {limited} refused"
    );
    let wait: u64 = retry_after
        .expect("a 429 with Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=6).contains(&wait), "Retry-After: {wait}");
    // A guessed session cookie and a failed sign-in are refused the same way.
    let url = format!("{}/v1/jobs/stats", app.base);
    let r = crate::helpers::send(
        Method::GET,
        &url,
        &[("cookie", "fp_admin=0123456789abcdef")],
        Bytes::new(),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 429);
    let (s, _) = app
        .post_json("/admin/api/session", "", &json!({ "key": "fpk_guess" }))
        .await;
    assert_eq!(s, 429, "a sign-in with a wrong key");
    // The key that authenticated before still works from the same address; a key that never
    // authenticated cannot be told from a guess without the database, so it waits too.
    assert_eq!(app.get_json("/v1/jobs/stats", ADMIN).await.0, 200);
    assert_eq!(app.get_json("/v1/jobs/stats", &viewer).await.0, 429);
    // The refusals are counted.
    let r = app
        .req(Method::GET, "/metrics", Some(ADMIN), None, Bytes::new())
        .await;
    let text = String::from_utf8_lossy(&r.body);
    let refused: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("flexphoto_failed_auth_refused_total "))
        .expect("the refusal counter")
        .trim()
        .parse()
        .unwrap();
    assert!(
        refused >= limited + 3,
        "{refused} refusals counted, {limited}+3 seen"
    );
    app.cleanup().await;
}

/// Sends `head` and the first `start` bytes of `body` at once, then the rest a byte a second,
/// until the server answers; returns how long that took and the answer's first line.
fn dribble(addr: &str, head: &str, body: &[u8], start: usize) -> (Duration, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let req = format!("{head}Content-Length: {}\r\n\r\n", body.len());
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(&body[..start]).unwrap();
    let mut w = s.try_clone().unwrap();
    let rest = body[start..].to_vec();
    std::thread::spawn(move || {
        for b in rest {
            std::thread::sleep(Duration::from_secs(1));
            if w.write_all(&[b]).is_err() {
                return;
            }
        }
    });
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    (
        started.elapsed(),
        text.lines().next().unwrap_or("").to_owned(),
    )
}

/// Bodies that carry an image are bounded too: a search form, a JSON search and an upload's
/// caption dribbled a byte a second are cut off at the request deadline (their size at the
/// slowest allowed rate on top), and a text field is refused as soon as it is too large.
#[tokio::test]
async fn slow_image_bodies_and_large_form_fields_are_bounded() {
    let app = App::spawn(
        Options::new(Backend::Sqlite)
            .env("FLEXPHOTO__SERVER__UPLOAD_IDLE_TIMEOUT_SECS", "2")
            .env("FLEXPHOTO__SERVER__REQUEST_TIMEOUT_SECS", "3"),
    )
    .await;
    let uploader = app.key("uploader", None).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let b = "XslowX";
    let form = |field: &str| {
        format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"{field}\"\r\n\r\n{}\r\n--{b}--\r\n",
            "x".repeat(200)
        )
        .into_bytes()
    };
    let multipart = format!("Content-Type: multipart/form-data; boundary={b}\r\n");
    let head = |path: &str, ct: &str| {
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {uploader}\r\n{ct}")
    };
    let json_body = format!("{{\"text\": \"{}\"}}", "x".repeat(200)).into_bytes();
    let cases = [
        (
            "multipart search",
            head("/v1/search", &multipart),
            form("text"),
            60,
        ),
        (
            "JSON search",
            head("/v1/search", "Content-Type: application/json\r\n"),
            json_body,
            5,
        ),
        (
            "upload caption",
            head("/v1/images", &multipart),
            form("caption"),
            60,
        ),
    ];
    let runs: Vec<_> = cases
        .into_iter()
        .map(|(what, head, body, start)| {
            let addr = addr.clone();
            std::thread::spawn(move || (what, dribble(&addr, &head, &body, start)))
        })
        .collect();
    for r in runs {
        let (what, (took, status)) = r.join().unwrap();
        assert!(
            took < Duration::from_secs(6),
            "{what}: a dribbling client held the request for {took:?} ({status})"
        );
        assert!(status.contains(" 503"), "{what}: {status}");
    }
    // A 2 MiB caption is refused while it is read, naming the field.
    let mut body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"owner\"\r\n\r\nrita\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"caption\"\r\n\r\n"
    )
    .into_bytes();
    body.extend(std::iter::repeat_n(b'c', 2 << 20));
    body.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    let r = app
        .req(
            Method::POST,
            "/v1/images",
            Some(&uploader),
            Some(&format!("multipart/form-data; boundary={b}")),
            Bytes::from(body),
        )
        .await;
    let text = String::from_utf8_lossy(&r.body);
    assert_eq!(r.status, 413, "{text}");
    assert!(text.contains("caption"), "{text}");
    app.cleanup().await;
}

/// Reusing a presigned PUT cannot change what was processed: the bytes are checked against
/// what was there at completion, and once processed the original lives where no URL writes.
#[tokio::test]
async fn presigned_uploads_cannot_be_swapped() {
    for b in backends() {
        // Workers off at first, so the swap lands between completion and processing.
        let mut app = App::spawn(Options::new(b).env("FLEXPHOTO__QUEUE__WORKERS", "0")).await;
        let a = jpeg(200, 150, 51);
        let (s, v) = app
            .post_json(
                "/v1/images",
                ADMIN,
                &json!({"owner": "sam", "content_type": "image/jpeg", "size": a.len()}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let id = v["id"].as_str().unwrap().to_owned();
        assert!(put_bytes(&v, a.clone()).await < 300);
        let (s, c) = app
            .post_json(&format!("/v1/images/{id}/complete"), ADMIN, &json!({}))
            .await;
        assert_eq!(s, 202, "{c}");
        // Same length, other bytes, through the same URL.
        let mut b2 = a.clone();
        let mid = b2.len() / 2;
        b2[mid] ^= 0xFF;
        b2[mid + 1] ^= 0xFF;
        let _ = put_bytes(&v, b2).await;
        app.stop();
        app.env
            .insert("FLEXPHOTO__QUEUE__WORKERS".into(), "1".into());
        app.start();
        let img = app.wait_done(&id, Duration::from_secs(60)).await;
        // The local store's PUT refuses a second write (the image is no longer uploading), or
        // the worker sees the object changed; either way nothing else is processed.
        if img["status"] == "failed" {
            assert!(img["error"].as_str().unwrap().contains("changed"), "{img}");
        } else {
            assert_eq!(img["sha256"], hex_sha(&a), "{img}");
        }

        // A processed image: the URL used again afterwards changes nothing served.
        let c2 = jpeg(200, 150, 52);
        let (s, v) = app
            .post_json(
                "/v1/images",
                ADMIN,
                &json!({"owner": "sam", "content_type": "image/jpeg", "size": c2.len()}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let id2 = v["id"].as_str().unwrap().to_owned();
        assert!(put_bytes(&v, c2.clone()).await < 300);
        let (s, _) = app
            .post_json(&format!("/v1/images/{id2}/complete"), ADMIN, &json!({}))
            .await;
        assert_eq!(s, 202);
        let ready = app.wait_done(&id2, Duration::from_secs(60)).await;
        assert_eq!(ready["status"], "ready", "{ready}");
        assert_eq!(ready["sha256"], hex_sha(&c2));
        let mut other = c2.clone();
        let mid = other.len() / 3;
        other[mid] ^= 0x55;
        let _ = put_bytes(&v, other).await;
        let original = ready["keys"]["original"].as_str().unwrap();
        assert!(!original.starts_with("uploads/"), "{ready}");
        if let Ok(stored) = std::fs::read(app.data_dir.join("objects").join(original)) {
            assert_eq!(
                hex_sha(&stored),
                ready["sha256"],
                "the pinned original changed"
            );
        }
        let (_, again) = app.get_json(&format!("/v1/images/{id2}"), ADMIN).await;
        assert_eq!(again["sha256"], ready["sha256"]);
        assert_eq!(again["status"], "ready");
        app.cleanup().await;
    }
}

/// The same on an S3 store, which (unlike the local store) accepts a second PUT through the
/// presigned URL: a swap before processing fails the job, naming the change, and a re-PUT
/// after the image is ready changes neither the pinned original, nor its variants, nor what
/// the edge renders from it.
#[tokio::test]
async fn presigned_uploads_cannot_be_swapped_on_s3() {
    if crate::helpers::s3_env().is_none() {
        crate::skip::skip(
            "s3",
            "FLEXPHOTO_TEST_S3_* is not set; the S3 swap test did not run",
        );
        return;
    }
    crate::helpers::ensure_bucket().await;
    let s3 = crate::helpers::s3_client().unwrap();
    let bucket = crate::helpers::s3_env().unwrap()["FLEXPHOTO__STORAGE__S3__BUCKET"].clone();
    let object = |key: String| {
        let (s3, bucket) = (s3.clone(), bucket.clone());
        async move {
            let o = s3.get_object().bucket(bucket).key(&key).send().await;
            let o = o.unwrap_or_else(|e| panic!("{key}: {e:?}"));
            o.body.collect().await.unwrap().into_bytes().to_vec()
        }
    };
    let mut opts = Options::new(Backend::Sqlite).env("FLEXPHOTO__QUEUE__WORKERS", "0");
    opts.s3 = true;
    opts.up = true;
    let mut app = App::spawn(opts).await;
    async fn presign(app: &App, len: usize, owner: &str) -> Value {
        let body = json!({"owner": owner, "content_type": "image/jpeg", "size": len});
        let (s, v) = app.post_json("/v1/images", ADMIN, &body).await;
        assert_eq!(s, 201, "{v}");
        v
    }
    let a = jpeg(200, 150, 81);
    let v = presign(&app, a.len(), "sam").await;
    let id = v["id"].as_str().unwrap().to_owned();
    assert!(put_bytes(&v, a.clone()).await < 300);
    let (s, c) = app
        .post_json(&format!("/v1/images/{id}/complete"), ADMIN, &json!({}))
        .await;
    assert_eq!(s, 202, "{c}");
    // Same length, other bytes, through the same URL: S3 takes it.
    let mut swapped = a.clone();
    let mid = swapped.len() / 2;
    for b in &mut swapped[mid..mid + 32] {
        *b ^= 0x5A;
    }
    assert!(
        put_bytes(&v, swapped).await < 300,
        "S3 accepts a second PUT"
    );
    app.stop();
    app.env
        .insert("FLEXPHOTO__QUEUE__WORKERS".into(), "1".into());
    app.start();
    let img = app.wait_done(&id, Duration::from_secs(60)).await;
    assert_eq!(img["status"], "failed", "{img}");
    assert!(
        img["error"].as_str().unwrap_or("").contains("changed"),
        "the error must say the bytes changed: {img}"
    );

    // A processed image, then its URL used again.
    let c2 = jpeg(320, 240, 82);
    let v = presign(&app, c2.len(), "sam").await;
    let id2 = v["id"].as_str().unwrap().to_owned();
    assert!(put_bytes(&v, c2.clone()).await < 300);
    let (s, _) = app
        .post_json(&format!("/v1/images/{id2}/complete"), ADMIN, &json!({}))
        .await;
    assert_eq!(s, 202);
    let ready = app.wait_done(&id2, Duration::from_secs(60)).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["sha256"], hex_sha(&c2));
    let original = ready["keys"]["original"].as_str().unwrap().to_owned();
    assert!(!original.starts_with("uploads/"), "{ready}");
    let variants: Vec<String> = ready["keys"]["variants"]
        .as_object()
        .unwrap()
        .values()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    let mut before = Vec::new();
    for k in &variants {
        before.push(object(k.clone()).await);
    }
    let mut other = c2.clone();
    let mid = other.len() / 2;
    for b in &mut other[mid..mid + 64] {
        *b ^= 0x5A;
    }
    assert!(put_bytes(&v, other).await < 300, "S3 accepts the re-PUT");
    // The pinned original and every variant are the processed bytes still.
    assert_eq!(hex_sha(&object(original.clone()).await), ready["sha256"]);
    for (k, b) in variants.iter().zip(&before) {
        assert!(object(k.clone()).await == *b, "variant {k} changed");
    }
    // What the edge renders now from the original is what it renders from the same bytes
    // uploaded afresh (another owner, so not a duplicate).
    let v = presign(&app, c2.len(), "ref").await;
    let id3 = v["id"].as_str().unwrap().to_owned();
    assert!(put_bytes(&v, c2.clone()).await < 300);
    let (s, _) = app
        .post_json(&format!("/v1/images/{id3}/complete"), ADMIN, &json!({}))
        .await;
    assert_eq!(s, 202);
    assert_eq!(
        app.wait_done(&id3, Duration::from_secs(60)).await["status"],
        "ready"
    );
    let mut rendered = Vec::new();
    for id in [&id2, &id3] {
        let (s, u) = app
            .get_json(&format!("/v1/images/{id}/url?w=77&fmt=png"), ADMIN)
            .await;
        assert_eq!(s, 200, "{u}");
        let r = app
            .req(
                Method::GET,
                u["url"].as_str().unwrap(),
                None,
                None,
                Bytes::new(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        rendered.push(hex_sha(&r.body));
    }
    assert_eq!(rendered[0], rendered[1], "the edge renders other bytes");
    app.cleanup().await;
}

fn hex_sha(data: &[u8]) -> Value {
    Value::String(flexphoto_media::fingerprint::sha256_hex(data))
}

/// Bytes that are not an allowed image are refused before they are stored (one-shot) or
/// failed with a reason (presigned); nothing becomes ready as an unknown type.
#[tokio::test]
async fn only_allowed_images_are_accepted() {
    let app = App::spawn(
        Options::new(Backend::Sqlite).env("FLEXPHOTO__PROCESSING__MAX_PIXELS", "1000000"),
    )
    .await;
    for (name, bytes) in [
        (
            "x.jpg",
            b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>".to_vec(),
        ),
        ("y.jpg", b"%PDF-1.4 not an image".to_vec()),
        ("z.png", vec![0u8; 64]),
        // A GIF signature is not a GIF: the loader's header read decides, not the magic.
        (
            "w.gif",
            b"GIF89a but then nothing that decodes at all, just words".to_vec(),
        ),
    ] {
        let (s, v) = app.upload(ADMIN, "ivy", name, &bytes).await;
        assert_eq!(s, 415, "{name}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().len() > 10);
    }
    // Too many pixels for processing.max_pixels: refused before it is stored.
    let (s, v) = app
        .upload(ADMIN, "ivy", "big.jpg", &jpeg(1200, 1000, 45))
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("megapixels"),
        "{v}"
    );
    let (_, list) = app.get_json("/v1/images?owner=ivy", ADMIN).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");
    let junk = b"GIF89a but then nothing that decodes at all, just words".to_vec();
    let id = presign_put_and_complete(&app, "ivy", "image/gif", junk).await;
    let img = app.wait_done(&id, Duration::from_secs(60)).await;
    assert_eq!(img["status"], "failed", "{img}");
    assert_ne!(img["mime"], "application/octet-stream");
    app.cleanup().await;
}

/// A delete hides the image at once and, through its job, leaves no object behind, even
/// when the image was still being processed.
#[tokio::test]
async fn deletes_leave_nothing_behind() {
    for b in backends() {
        let app = App::spawn(Options::new(b)).await;
        let (s, v) = app
            .upload(ADMIN, "dot", "d.jpg", &jpeg(1600, 1200, 61))
            .await;
        assert_eq!(s, 201, "{v}");
        let ready = v["id"].as_str().unwrap().to_owned();
        app.wait_done(&ready, Duration::from_secs(60)).await;
        // One more, deleted while its processing may still be running.
        let (s, v) = app
            .upload(ADMIN, "dot", "e.jpg", &jpeg(2400, 1800, 62))
            .await;
        assert_eq!(s, 201, "{v}");
        let busy = v["id"].as_str().unwrap().to_owned();
        for id in [&busy, &ready] {
            let r = app.delete(&format!("/v1/images/{id}"), ADMIN).await;
            assert_eq!(r.status, 204);
            assert_eq!(
                app.get_json(&format!("/v1/images/{id}"), ADMIN).await.0,
                404
            );
        }
        let (_, page) = app.get_json("/v1/images?owner=dot", ADMIN).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 0, "{page}");
        // The delete jobs finish: no job left, no object left in the store.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, st) = app.get_json("/v1/jobs/stats", ADMIN).await;
            let open = st["queue"]["jobs"]["queued"].as_i64().unwrap_or(0)
                + st["queue"]["jobs"]["running"].as_i64().unwrap_or(0);
            // `_flexphoto/` holds the deployment's own objects (the withheld list), not images.
            let objects = count_files(&app.data_dir.join("objects"))
                - count_files(&app.data_dir.join("objects").join("_flexphoto"));
            if open == 0 && objects == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "left behind: {objects} objects, stats {st}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        app.cleanup().await;
    }
}

/// A process job that outlives its lease while its image is deleted: the delete job runs
/// first (removing what existed then), the stalled job then stores its variants and pinned
/// original, finds its lease lost and the image gone, and removes them itself.
#[tokio::test]
async fn a_stalled_process_job_removes_what_it_stored_for_a_deleted_image() {
    let app = App::spawn(
        Options::new(Backend::Sqlite)
            .env("FLEXPHOTO__QUEUE__WORKERS", "2")
            .env("FLEXPHOTO_FAILPOINT_PAUSE", "process.before_store=8000"),
    )
    .await;
    let data = jpeg(400, 300, 71);
    let id = presign_put_and_complete(&app, "lea", "image/jpeg", data).await;
    // The job has analysed the image and stalls before storing anything.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !app
        .log()
        .contains("failpoint process.before_store: pausing")
    {
        assert!(
            Instant::now() < deadline,
            "the job never paused:\n{}",
            app.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = app.delete(&format!("/v1/images/{id}"), ADMIN).await;
    assert_eq!(r.status, 204);
    // Its lease runs out meanwhile (a frozen worker): expired, and another token on it.
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite:{}",
        app.data_dir.join("flexphoto.db").display()
    ))
    .await
    .unwrap();
    let image_id = uuid::Uuid::parse_str(&id).unwrap();
    let n = sqlx::query(
        "UPDATE jobs SET lease_token = randomblob(16), lease_until = '2000-01-01T00:00:00+00:00' \
         WHERE image_id = $1 AND kind = 'process' AND state = 'running'",
    )
    .bind(image_id)
    .execute(&db)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(n, 1, "the stalled job's lease");
    // The delete job no longer waits for it: the row goes before the stalled job resumes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (left,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM images WHERE id = $1")
            .bind(image_id)
            .fetch_one(&db)
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the delete job never ran:\n{}",
            app.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    db.close().await;
    let lost = r#"flexphoto_jobs_finished_total{kind="process",outcome="lost"}"#;
    assert_eq!(
        sample(&app.metrics().await, lost),
        0.0,
        "the stalled job ended before the delete (raise the pause)"
    );
    // The stalled job resumes, stores its output, loses its lease, and removes what it stored.
    let deadline = Instant::now() + Duration::from_secs(60);
    while sample(&app.metrics().await, lost) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the stalled job never ended:\n{}",
            app.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let objects = app.data_dir.join("objects");
    let left: Vec<String> = walk(&objects)
        .into_iter()
        .filter(|p| p.contains(&id))
        .collect();
    assert!(left.is_empty(), "left behind for a deleted image: {left:?}");
    // It really stored them after the delete job had run: its variants and pinned original.
    let log = plain(&app.log());
    let removed: usize = log
        .lines()
        .find(|l| l.contains("its output was removed"))
        .and_then(|l| l.split("removed=").nth(1))
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no removal logged:\n{log}"));
    assert!(removed >= 2, "only {removed} objects were removed:\n{log}");
    app.cleanup().await;
}

/// `text` without terminal colour codes.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Every file under `dir`, as paths.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .flat_map(|e| {
            let p = e.path();
            if p.is_dir() {
                walk(&p)
            } else {
                vec![p.display().to_string()]
            }
        })
        .collect()
}

fn count_files(dir: &std::path::Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                count_files(&p)
            } else {
                1
            }
        })
        .sum()
}

/// The per-job time limit stops the image work itself: the job retries and then fails with a
/// reason, and the next image is processed at once.
#[tokio::test]
async fn the_job_time_limit_stops_image_work() {
    let app = App::spawn(
        Options::new(Backend::Sqlite)
            .env("FLEXPHOTO__PROCESSING__TIMEOUT_SECS", "1")
            .env("FLEXPHOTO__UPLOAD__MAX_BYTES", "134217728")
            .env("FLEXPHOTO__QUEUE__MAX_ATTEMPTS", "2")
            .env("FLEXPHOTO__QUEUE__WORKERS", "1")
            .env("FLEXPHOTO__PROCESSING__THREADS", "1"),
    )
    .await;
    // A large noisy PNG: far more than a second of decoding and encoding here.
    let big = noisy_png(6000, 5000);
    let (s, v) = app.upload(ADMIN, "tim", "big.png", &big).await;
    assert_eq!(s, 201, "{v}");
    let slow = v["id"].as_str().unwrap().to_owned();
    let done = app.wait_done(&slow, Duration::from_secs(90)).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["error"].as_str().unwrap().contains("time limit"),
        "{done}"
    );
    let (s, v) = app
        .upload(ADMIN, "tim", "small.jpg", &jpeg(120, 90, 63))
        .await;
    assert_eq!(s, 201, "{v}");
    let started = Instant::now();
    let ok = app
        .wait_done(v["id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(ok["status"], "ready", "{ok}");
    assert!(started.elapsed() < Duration::from_secs(15));
    app.cleanup().await;
}

fn noisy_png(w: u32, h: u32) -> Vec<u8> {
    flexphoto_media::vips::init(1).unwrap();
    let mut px = Vec::with_capacity((w * h * 3) as usize);
    let mut s: u32 = 99;
    for _ in 0..w * h * 3 {
        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        px.push((s >> 24) as u8);
    }
    flexphoto_media::vips::Image::from_pixels(&px, w, h, 3)
        .unwrap()
        .save(".png[compression=1]")
        .unwrap()
        .to_vec()
}

/// A query image obeys the upload limits: a pixel bomb is refused before decoding.
#[tokio::test]
async fn query_images_obey_upload_limits() {
    let Some(models) = crate::helpers::models() else {
        return;
    };
    let app = App::spawn(
        Options::new(Backend::Sqlite)
            .with_search(&models)
            .env("FLEXPHOTO__PROCESSING__MAX_PIXELS", "1000000"),
    )
    .await;
    let big = jpeg(1600, 1200, 71);
    let (s, v) = crate::search::multipart_search(&app, &[], &big).await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("megapixels"),
        "{v}"
    );
    app.cleanup().await;
}
