//! Catalog governance end to end on the real binary, on SQLite and Postgres: collections with
//! versioned schemas loaded from TOML and JSON, validation at ingest (refused with every
//! failure, or routed to review) with values from the upload, a sidecar and the file itself,
//! re-validation after a schema change, vocabularies and term filters, deterministic
//! retrieval with field filters and sorts, the review workflow and queue with optimistic
//! concurrency, correction history with restore, lineage, and rights windows.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::{json, Value};

use crate::helpers::{backends, jpeg, json_of, App, Options, ADMIN};
use flexphoto_control_plane::catalog::embedded::{iptc_segment, with_segments, xmp_segment};

/// A one-shot upload with extra form fields and an optional XMP sidecar.
pub async fn upload_with(
    app: &App,
    key: &str,
    owner: &str,
    fields: &[(&str, &str)],
    data: &[u8],
    sidecar: Option<&str>,
) -> (u16, Value) {
    let boundary = "XcatalogBoundaryX";
    let mut body = Vec::new();
    let mut text = |name: &str, value: &str| {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    };
    text("owner", owner);
    for (k, v) in fields {
        text(k, v);
    }
    if let Some(x) = sidecar {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"sidecar\"; filename=\"p.xmp\"\r\nContent-Type: application/rdf+xml\r\n\r\n{x}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = app
        .req(
            Method::POST,
            "/v1/images",
            Some(key),
            Some(&format!("multipart/form-data; boundary={boundary}")),
            Bytes::from(body),
        )
        .await;
    (r.status, json_of(&r))
}

async fn send_json(app: &App, method: Method, path: &str, key: &str, body: &Value) -> (u16, Value) {
    let r = app
        .req(
            method,
            path,
            Some(key),
            Some("application/json"),
            Bytes::from(body.to_string()),
        )
        .await;
    (r.status, json_of(&r))
}

async fn send_toml(app: &App, method: Method, path: &str, key: &str, body: &str) -> (u16, Value) {
    let r = app
        .req(
            method,
            path,
            Some(key),
            Some("application/toml"),
            Bytes::from(body.to_owned()),
        )
        .await;
    (r.status, json_of(&r))
}

fn ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {v}"))
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls `f` until it returns `Some` or the time is up.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const PRESS_TOML: &str = r#"
owner = "press"
name = "press-2026"
description = "Editorial photos, spring campaign"
on_invalid = "refuse"
reason = "first version"

[[fields]]
name = "photographer_id"
type = "text"
required = true
pattern = "^P[0-9]{4}$"
xmp = ["fp:PhotographerId"]

[[fields]]
name = "shot_count"
type = "number"
min = 1
max = 100

[[fields]]
name = "usage"
type = "enum"
values = ["editorial", "commercial"]
required = true

[[fields]]
name = "credit"
required = true
max_length = 40

[[fields]]
name = "title"
recommended = true
"#;

const SIDECAR: &str = r#"<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:fp="https://example.com/fp/" fp:PhotographerId="P0042">
<dc:title><rdf:Alt><rdf:li xml:lang="x-default">From the sidecar</rdf:li></rdf:Alt></dc:title>
</rdf:Description></rdf:RDF></x:xmpmeta>"#;

/// Schemas from TOML and JSON; a refusing collection answers 422 with every failing field
/// and rule; values come from the form, a sidecar and the file with their sources kept; a
/// reviewing collection accepts and routes to review; presigned uploads validate what they
/// declare; a schema change re-validates existing images in the background.
async fn schemas_and_validation_at_ingest(app: &App) {
    let (s, coll) = send_toml(app, Method::POST, "/v1/collections", ADMIN, PRESS_TOML).await;
    assert_eq!(s, 201, "{coll}");
    let press = coll["id"].as_str().unwrap().to_owned();
    assert_eq!(coll["schema"]["version"], 1, "{coll}");
    assert_eq!(coll["on_invalid"], "refuse");
    // The same name again is a conflict; a bad schema names the field and rule.
    let (s, e) = send_toml(app, Method::POST, "/v1/collections", ADMIN, PRESS_TOML).await;
    assert_eq!(s, 409, "{e}");
    let (s, e) = send_json(
        app,
        Method::POST,
        "/v1/collections",
        ADMIN,
        &json!({"owner": "press", "name": "bad", "fields": [{"name": "n", "type": "number", "min": 5, "max": 1}]}),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("min is above max"), "{e}");

    // Refused: every failing field and rule at once, nothing stored.
    let (s, e) = upload_with(
        app,
        ADMIN,
        "press",
        &[
            ("collection", "press-2026"),
            ("fields.shot_count", "500"),
            ("fields.usage", "advertising"),
            ("credit", "An agency whose name is far too long for the rule"),
        ],
        &jpeg(64, 48, 1),
        None,
    )
    .await;
    assert_eq!(s, 422, "{e}");
    assert_eq!(e["error"]["code"], "validation_failed", "{e}");
    let failures: Vec<(String, String)> = e["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["field"].as_str().unwrap().to_owned(), f["rule"].as_str().unwrap().to_owned()))
        .collect();
    for want in [
        ("photographer_id", "required"),
        ("shot_count", "max"),
        ("usage", "allowed_values"),
        ("credit", "max_length"),
    ] {
        assert!(
            failures.contains(&(want.0.to_owned(), want.1.to_owned())),
            "{want:?} missing: {e}"
        );
    }
    let (_, page) = app.get_json("/v1/images?owner=press&versions=all", ADMIN).await;
    assert_eq!(ids(&page).len(), 0, "a refused upload stores nothing: {page}");

    // Accepted: the photographer from the sidecar, the credit and keywords embedded in the
    // file (IPTC), usage from the form; the form beats the sidecar for the title.
    let file = with_segments(
        &jpeg(64, 48, 2),
        &[iptc_segment(&[(2, 110, "Agency"), (2, 25, "harbour"), (2, 5, "IPTC title")])],
    );
    let (s, v) = upload_with(
        app,
        ADMIN,
        "press",
        &[
            ("collection", press.as_str()),
            ("fields.usage", "editorial"),
            ("title", "From the form"),
            ("metadata", r#"{"shot_count": 12}"#),
        ],
        &file,
        Some(SIDECAR),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["catalog"]["failures"], json!([]), "{v}");
    assert_eq!(v["catalog"]["sources"]["photographer_id"], "sidecar", "{v}");
    assert_eq!(v["catalog"]["sources"]["credit"], "embedded", "{v}");
    assert_eq!(v["catalog"]["sources"]["title"], "upload", "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let img = app.wait_done(&id, Duration::from_secs(60)).await;
    let d = &img["descriptive"];
    assert_eq!(d["values"]["title"], "From the form", "{img}");
    assert_eq!(d["values"]["photographer_id"], "P0042", "{img}");
    assert_eq!(d["values"]["credit"], "Agency", "{img}");
    assert_eq!(d["values"]["shot_count"], 12.0, "{img}");
    assert_eq!(d["values"]["keywords"], json!(["harbour"]), "{img}");
    assert_eq!(d["sources"]["keywords"]["source"], "embedded", "{img}");
    // The three groups apart.
    assert_eq!(img["workflow"]["state"], "draft", "{img}");
    assert_eq!(img["workflow"]["status"], "ready", "{img}");
    assert_eq!(img["technical"]["width"], 64, "{img}");
    assert!(img["technical"]["sha256"].is_string(), "{img}");
    assert_eq!(img["collection"]["name"], "press-2026", "{img}");

    // A reviewing collection accepts an invalid upload and routes it to review.
    let (s, c) = send_json(
        app,
        Method::POST,
        "/v1/collections",
        ADMIN,
        &json!({"owner": "press", "name": "archive", "on_invalid": "review",
                "fields": [{"name": "box", "type": "text", "required": true, "pattern": "^B[0-9]+$"}]}),
    )
    .await;
    assert_eq!(s, 201, "{c}");
    let archive = c["id"].as_str().unwrap().to_owned();
    let (s, v) = upload_with(
        app,
        ADMIN,
        "press",
        &[("collection", "archive"), ("fields.box", "shelf 4")],
        &jpeg(64, 48, 3),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["catalog"]["workflow_state"], "in_review", "{v}");
    assert_eq!(v["catalog"]["failures"][0]["rule"], "pattern", "{v}");
    let routed = v["id"].as_str().unwrap().to_owned();
    let (_, q) = app.get_json("/v1/review/queue?owner=press", ADMIN).await;
    let item = q["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == routed.as_str())
        .unwrap_or_else(|| panic!("not queued: {q}"));
    assert_eq!(item["reasons"][0]["kind"], "validation", "{q}");
    assert!(
        item["reasons"][0]["summary"].as_str().unwrap().contains("box pattern"),
        "{q}"
    );

    // Presigned: declared values are validated when the upload is created.
    let data = jpeg(40, 30, 4);
    let (s, e) = send_json(
        app,
        Method::POST,
        "/v1/images",
        ADMIN,
        &json!({"owner": "press", "content_type": "image/jpeg", "size": data.len(),
                "collection": press, "metadata": {"usage": "editorial"}}),
    )
    .await;
    assert_eq!(s, 422, "{e}");
    let (s, v) = send_json(
        app,
        Method::POST,
        "/v1/images",
        ADMIN,
        &json!({"owner": "press", "content_type": "image/jpeg", "size": data.len(),
                "collection": press, "metadata": {"usage": "editorial", "photographer_id": "P0001", "credit": "Me"}}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["catalog"]["collection"], press.as_str(), "{v}");

    // A new schema version re-validates existing images in the background: the accepted
    // image now lacks a required field and goes to review.
    let (s, sv) = send_toml(
        app,
        Method::PUT,
        &format!("/v1/collections/{press}/schema"),
        ADMIN,
        &format!(
            "{}\n[[fields]]\nname = \"location\"\ntype = \"text\"\nrequired = true\n",
            PRESS_TOML
                .split("[[fields]]")
                .skip(1)
                .map(|f| format!("[[fields]]{f}"))
                .collect::<String>()
        ),
    )
    .await;
    assert_eq!(s, 200, "{sv}");
    assert_eq!(sv["version"], 2, "{sv}");
    let img = eventually("re-validation", Duration::from_secs(30), || async {
        let (_, img) = app.get_json(&format!("/v1/images/{id}"), ADMIN).await;
        (img["descriptive"]["validation"]["schema_version"] == 2).then_some(img)
    })
    .await;
    assert_eq!(img["descriptive"]["validation"]["failures"][0]["field"], "location", "{img}");
    assert_eq!(img["workflow"]["state"], "in_review", "{img}");
    let (_, versions) = app
        .get_json(&format!("/v1/collections/{press}/schema/versions"), ADMIN)
        .await;
    assert_eq!(versions["items"].as_array().unwrap().len(), 2, "{versions}");
    let (_, v1) = app
        .get_json(&format!("/v1/collections/{press}/schema?version=1"), ADMIN)
        .await;
    assert_eq!(v1["reason"], "first version", "{v1}");
    let _ = archive;
}

#[tokio::test]
async fn collections_schemas_and_validation_at_ingest() {
    for b in backends() {
        let app = App::spawn(Options::new(b).env("FLEXPHOTO__CATALOG__REVALIDATE_SECS", "1")).await;
        schemas_and_validation_at_ingest(&app).await;
        app.cleanup().await;
    }
}
