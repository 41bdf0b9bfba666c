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

use crate::helpers::{backends, jpeg, json_of, App, Backend, Multipart, Options, ADMIN};
use flexphoto_control_plane::catalog::embedded::{iptc_segment, with_segments};

/// A one-shot upload with extra form fields and an optional XMP sidecar.
pub async fn upload_with(
    app: &App,
    key: &str,
    owner: &str,
    fields: &[(&str, &str)],
    data: &[u8],
    sidecar: Option<&str>,
) -> (u16, Value) {
    let mut form = Multipart::new().text("owner", owner);
    for (k, v) in fields {
        form = form.text(k, v);
    }
    if let Some(x) = sidecar {
        form = form.file("sidecar", "p.xmp", "application/rdf+xml", x.as_bytes());
    }
    app.post_form(
        "/v1/images",
        key,
        form.file("file", "p.jpg", "image/jpeg", data),
    )
    .await
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
pub(crate) async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
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
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("min is above max"),
        "{e}"
    );

    // Refused: every failing field and rule at once, nothing stored.
    let (s, e) = upload_with(
        app,
        ADMIN,
        "press",
        &[
            ("collection", "press-2026"),
            ("fields.shot_count", "500"),
            ("fields.usage", "advertising"),
            (
                "credit",
                "An agency whose name is far too long for the rule",
            ),
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
        .map(|f| {
            (
                f["field"].as_str().unwrap().to_owned(),
                f["rule"].as_str().unwrap().to_owned(),
            )
        })
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
    let (_, page) = app
        .get_json("/v1/images?owner=press&versions=all", ADMIN)
        .await;
    assert_eq!(
        ids(&page).len(),
        0,
        "a refused upload stores nothing: {page}"
    );

    // Accepted: the photographer from the sidecar, the credit and keywords embedded in the
    // file (IPTC), usage from the form; the form beats the sidecar for the title.
    let file = with_segments(
        &jpeg(64, 48, 2),
        &[iptc_segment(&[
            (2, 110, "Agency"),
            (2, 25, "harbour"),
            (2, 5, "IPTC title"),
        ])],
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
        item["reasons"][0]["summary"]
            .as_str()
            .unwrap()
            .contains("box pattern"),
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
    assert_eq!(
        img["descriptive"]["validation"]["failures"][0]["field"], "location",
        "{img}"
    );
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

const NATURE_TOML: &str = r#"
owner = "nat"
name = "nature"

[[fields]]
name = "rating"
type = "number"

[[fields]]
name = "shot_on"
type = "date"

[[fields]]
name = "subject"
type = "term"

[[fields]]
name = "region"
type = "text"

[[terms]]
id = "animals"
synonyms = ["fauna"]

[[terms]]
id = "dogs"
parent = "animals"
synonyms = ["dog", "puppy"]

[[terms]]
id = "golden retriever"
parent = "dogs"

[[terms]]
id = "birds"
parent = "animals"

[[terms]]
id = "sea"
synonyms = ["ocean"]
"#;

/// Keywords normalise to terms; a term filter finds narrower terms; field filters, term and
/// collection filters combine; sorting by a field pages stably with images without a value
/// last; results say which filters matched and how.
async fn vocabulary_filters_and_sorts(app: &App) {
    let (s, c) = send_toml(app, Method::POST, "/v1/collections", ADMIN, NATURE_TOML).await;
    assert_eq!(s, 201, "{c}");
    let nature = c["id"].as_str().unwrap().to_owned();
    let photos = [
        ("Puppy, beach", "4", "2026-03-01", "dogs", "north"),
        (
            "golden retriever",
            "2",
            "2026-01-15",
            "golden retriever",
            "south",
        ),
        ("seagull, Ocean", "5", "2025-12-24", "birds", "north"),
        ("tree", "", "", "", "east"),
        ("fauna", "3", "2026-02-10", "animals", "north"),
    ];
    let mut id = Vec::new();
    for (i, (kw, rating, shot, subject, region)) in photos.iter().enumerate() {
        let mut f: Vec<(&str, &str)> = vec![
            ("collection", "nature"),
            ("keywords", kw),
            ("fields.region", region),
        ];
        if !rating.is_empty() {
            f.push(("fields.rating", rating));
        }
        if !shot.is_empty() {
            f.push(("fields.shot_on", shot));
        }
        if !subject.is_empty() {
            f.push(("fields.subject", subject));
        }
        let (s, v) = upload_with(app, ADMIN, "nat", &f, &jpeg(48, 32, 100 + i as u32), None).await;
        assert_eq!(s, 201, "{v}");
        id.push(v["id"].as_str().unwrap().to_owned());
    }
    for i in &id {
        app.wait_done(i, Duration::from_secs(60)).await;
    }
    let (_, img) = app.get_json(&format!("/v1/images/{}", id[0]), ADMIN).await;
    assert_eq!(
        img["descriptive"]["values"]["keywords"],
        json!(["dogs", "beach"]),
        "{img}"
    );
    assert_eq!(img["tags"], json!(["dogs", "beach"]), "{img}");
    let terms: Vec<&str> = img["descriptive"]["terms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(terms, ["dogs"], "{img}");
    let (_, img2) = app.get_json(&format!("/v1/images/{}", id[2]), ADMIN).await;
    assert_eq!(
        img2["descriptive"]["values"]["keywords"],
        json!(["seagull", "sea"]),
        "{img2}"
    );

    let list = |q: String| async move {
        let (s, v) = app
            .get_json(&format!("/v1/images?owner=nat&{q}"), ADMIN)
            .await;
        assert_eq!(s, 200, "{q}: {v}");
        v
    };
    // animals finds dogs, golden retrievers, birds and animals themselves.
    let v = list("terms=animals&sort=oldest".into()).await;
    assert_eq!(
        ids(&v),
        [id[0].clone(), id[1].clone(), id[2].clone(), id[4].clone()],
        "{v}"
    );
    let v = list("terms=dogs&sort=oldest".into()).await;
    assert_eq!(ids(&v), [id[0].clone(), id[1].clone()], "{v}");
    let m = &v["items"][1];
    let _ = m;
    // Combined: a term, a number field, a text field and the collection.
    let v = list(format!(
        "terms=animals&fields=rating>=3;region=north&collection={nature}&sort=oldest"
    ))
    .await;
    assert_eq!(
        ids(&v),
        [id[0].clone(), id[2].clone(), id[4].clone()],
        "{v}"
    );
    let v = list("fields=shot_on<2026-02-01".into()).await;
    let mut got = ids(&v);
    got.sort();
    let mut want = vec![id[1].clone(), id[2].clone()];
    want.sort();
    assert_eq!(got, want, "{v}");
    let v = list("fields=region~ORT".into()).await;
    assert_eq!(ids(&v).len(), 3, "{v}");
    let (s, e) = app
        .get_json("/v1/images?owner=nat&fields=nosuch=1", ADMIN)
        .await;
    assert_eq!(s, 400, "{e}");
    let (s, e) = app
        .get_json("/v1/images?owner=nat&fields=rating>=many", ADMIN)
        .await;
    assert_eq!(s, 400, "{e}");

    // Sorted by rating, two per page: 5, 4, 3, 2, then the image without a rating.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("sort=field:rating:desc&limit=2&cursor={c}"),
            None => "sort=field:rating:desc&limit=2".into(),
        };
        let v = list(q).await;
        seen.extend(ids(&v));
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            id[2].clone(),
            id[0].clone(),
            id[4].clone(),
            id[1].clone(),
            id[3].clone()
        ]
    );
    let v = list("sort=field:shot_on&limit=10".into()).await;
    assert_eq!(ids(&v)[0], id[2], "earliest first: {v}");

    // These generated images look alike: near-duplicates are in the queue, saying of what
    // and how close.
    let q = eventually(
        "near-duplicate routing",
        Duration::from_secs(30),
        || async {
            let (_, q) = app
                .get_json("/v1/review/queue?owner=nat&reason=near_duplicate", ADMIN)
                .await;
            (!q["items"].as_array().unwrap().is_empty()).then_some(q)
        },
    )
    .await;
    let summary = q["items"][0]["reasons"][0]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("near-duplicate of ") && summary.contains("phash distance"),
        "{q}"
    );
    let (_, l) = app
        .get_json("/v1/images?owner=nat&reason=near_duplicate", ADMIN)
        .await;
    assert!(!ids(&l).is_empty(), "{l}");

    // A filter-only search says which filters matched and how.
    let (s, r) = send_json(
        app,
        Method::POST,
        "/v1/search",
        ADMIN,
        &json!({"owner": "nat", "terms": ["animals"], "fields": ["rating>=4"], "sort": "field:rating:desc"}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(ids(&r), [id[2].clone(), id[0].clone()], "{r}");
    let mf = &r["items"][1]["explanation"]["matched_filters"];
    let text = mf.to_string();
    assert!(
        text.contains("has term dogs, which is under animals"),
        "{mf}"
    );
    assert!(text.contains("rating is 4"), "{mf}");
    assert!(
        r["items"][0]["descriptive"]["values"]["rating"] == 5.0,
        "{r}"
    );
}

#[tokio::test]
async fn vocabularies_filters_and_field_sorts() {
    for b in backends() {
        let app = App::spawn(Options::new(b)).await;
        vocabulary_filters_and_sorts(&app).await;
        app.cleanup().await;
    }
}

/// The workflow's transitions are enforced and recorded; uploaders cannot approve their own
/// images, reviewers can; publishing needs approval; the queue lists why with priorities;
/// bulk decisions refuse stale versions (409) item by item; queue metrics by reason.
async fn workflow_and_queue(app: &App) {
    let uploader = app.key("uploader", Some("wf")).await;
    let reviewer = app.key("reviewer", None).await;
    let mut id = Vec::new();
    for i in 0..4 {
        let (s, v) = upload_with(
            app,
            &uploader,
            "wf",
            &[("title", &format!("photo {i}"))],
            &jpeg(40, 30, 200 + i),
            None,
        )
        .await;
        assert_eq!(s, 201, "{v}");
        id.push(v["id"].as_str().unwrap().to_owned());
    }
    for i in &id {
        app.wait_done(i, Duration::from_secs(60)).await;
    }
    let wf = |key: String, img: String, body: Value| async move {
        send_json(
            app,
            Method::POST,
            &format!("/v1/images/{img}/workflow"),
            &key,
            &body,
        )
        .await
    };
    // Not a transition: draft cannot be approved or published directly.
    let (s, e) = wf(reviewer.clone(), id[0].clone(), json!({"to": "approved"})).await;
    assert_eq!(s, 409, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("in_review, withdrawn"),
        "{e}"
    );
    // The uploader submits with a note; the image enters the queue.
    let (s, v) = wf(
        uploader.clone(),
        id[0].clone(),
        json!({"to": "in_review", "reason": "ready for the desk"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["workflow"]["state"], "in_review");
    assert_eq!(v["review_state"], "needs_review", "{v}");
    let version = v["version"].as_i64().unwrap();
    // The uploader cannot approve; a reviewer can; a stale version is refused.
    let (s, e) = wf(
        uploader.clone(),
        id[0].clone(),
        json!({"to": "approved", "version": version}),
    )
    .await;
    assert_eq!(s, 403, "{e}");
    let (s, e) = wf(
        reviewer.clone(),
        id[0].clone(),
        json!({"to": "approved", "version": version - 1}),
    )
    .await;
    assert_eq!(s, 409, "{e}");
    assert_eq!(e["error"]["code"], "stale_version", "{e}");
    assert_eq!(e["current_version"], version, "{e}");
    let (s, v) = wf(
        reviewer.clone(),
        id[0].clone(),
        json!({"to": "approved", "version": version, "reason": "sharp"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(
        v["workflow"]["review"].is_null(),
        "a decision resolves the reasons: {v}"
    );
    let (s, v) = wf(reviewer.clone(), id[0].clone(), json!({"to": "published"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["workflow"]["state"], "published");
    // Each transition is in the history with actor, time and reason.
    let (_, h) = app
        .get_json(&format!("/v1/images/{}/history", id[0]), ADMIN)
        .await;
    let moves: Vec<(String, String)> = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["field"] == "workflow_state")
        .map(|e| {
            (
                e["new_value"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        moves,
        [
            ("in_review".to_owned(), "ready for the desk".to_owned()),
            ("approved".to_owned(), "sharp".to_owned()),
            ("published".to_owned(), String::new())
        ],
        "{h}"
    );
    assert!(
        h["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"].as_str().unwrap().starts_with("reviewer key")),
        "{h}"
    );

    // A collection that does not require approval publishes from review directly.
    let (_, c) = send_json(
        app,
        Method::POST,
        "/v1/collections",
        ADMIN,
        &json!({"owner": "wf", "name": "quick", "publish_requires_approval": false}),
    )
    .await;
    assert_eq!(c["publish_requires_approval"], false, "{c}");

    // Queue: three submitted, oldest first, and by priority; bulk approve with one stale.
    for i in &id[1..] {
        let (s, v) = wf(uploader.clone(), i.clone(), json!({"to": "in_review"})).await;
        assert_eq!(s, 200, "{v}");
    }
    let (_, q) = app.get_json("/v1/review/queue?owner=wf", &reviewer).await;
    assert_eq!(ids(&q), id[1..].to_vec(), "{q}");
    assert_eq!(q["items"][0]["reasons"][0]["kind"], "submitted", "{q}");
    let (_, q2) = app
        .get_json("/v1/review/queue?owner=wf&limit=2", &reviewer)
        .await;
    let (_, q3) = app
        .get_json(
            &format!(
                "/v1/review/queue?owner=wf&limit=2&cursor={}",
                q2["next_cursor"].as_str().unwrap()
            ),
            &reviewer,
        )
        .await;
    assert_eq!([ids(&q2), ids(&q3)].concat(), id[1..].to_vec());
    let (_, qp) = app
        .get_json("/v1/review/queue?owner=wf&sort=priority", &reviewer)
        .await;
    assert_eq!(ids(&qp).len(), 3, "{qp}");
    let items: Vec<Value> = q["items"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(n, it)| json!({"id": it["id"], "version": it["version"].as_i64().unwrap() - i64::from(n == 1)}))
        .collect();
    let (s, r) = send_json(
        app,
        Method::POST,
        "/v1/review/decisions",
        &reviewer,
        &json!({"action": "approve", "reason": "batch", "items": items}),
    )
    .await;
    assert_eq!(s, 207, "{r}");
    assert_eq!(r["succeeded"], 2, "{r}");
    assert_eq!(r["results"][1]["status"], 409, "{r}");
    assert_eq!(r["results"][1]["code"], "stale_version", "{r}");
    let (_, q) = app.get_json("/v1/review/queue?owner=wf", &reviewer).await;
    assert_eq!(
        ids(&q),
        [id[2].clone()],
        "only the stale one still waits: {q}"
    );
    let (_, m) = app.get_json("/v1/review/metrics?owner=wf", &reviewer).await;
    assert_eq!(m["waiting"], 1, "{m}");
    assert_eq!(m["by_reason"][0]["reason"], "submitted", "{m}");
    assert_eq!(m["by_reason"][0]["waiting"], 1, "{m}");
    assert_eq!(m["by_reason"][0]["under_1h"], 1, "{m}");
    let r = app
        .req(Method::GET, "/metrics", Some(ADMIN), None, Bytes::new())
        .await;
    let text = String::from_utf8_lossy(&r.body);
    assert!(
        text.contains("flexphoto_review_waiting{reason=\"submitted\"} 1"),
        "{text}"
    );
    // The legacy review state route goes through the workflow.
    let r = app
        .req(
            Method::PATCH,
            &format!("/v1/images/{}", id[2]),
            Some(&reviewer),
            Some("application/json"),
            Bytes::from(json!({"review_state": "rejected", "reason": "blurred"}).to_string()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(json_of(&r)["workflow"]["state"], "rejected");
}

#[tokio::test]
async fn review_workflow_queue_and_concurrency() {
    for b in backends() {
        // Generated test images look alike: no near-duplicate routing here.
        let app =
            App::spawn(Options::new(b).env("FLEXPHOTO__DUPLICATES__PHASH_MAX_DISTANCE", "-1"))
                .await;
        workflow_and_queue(&app).await;
        app.cleanup().await;
    }
}

/// Corrections are never silent: who, when, why, before, after and source, as a readable
/// diff; a stale version is refused; any past version can be restored as a new change; a
/// correction re-syncs what filters see. Versions and lineage: a new version supersedes the
/// old in listings, the history shows the chain.
async fn history_restore_and_lineage(app: &App) {
    let (s, v) = upload_with(
        app,
        ADMIN,
        "hist",
        &[("title", "Dune"), ("keywords", "sand, sea")],
        &jpeg(40, 30, 300),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let img = app.wait_done(&id, Duration::from_secs(60)).await;
    let v0 = img["version"].as_i64().unwrap();
    let path = format!("/v1/images/{id}/metadata");
    let patch = |body: Value| {
        let path = path.clone();
        async move { send_json(app, Method::PATCH, &path, ADMIN, &body).await }
    };
    let (s, a) = patch(json!({"values": {"title": "Dune at dusk", "keywords": ["sand", "dusk"], "credit": "Ann"}, "version": v0, "reason": "typo"})).await;
    assert_eq!(s, 200, "{a}");
    let v1 = a["version"].as_i64().unwrap();
    assert!(v1 > v0);
    // Someone with the old version is refused.
    let (s, e) = patch(json!({"values": {"title": "Other"}, "version": v0})).await;
    assert_eq!(s, 409, "{e}");
    let (s, _) =
        patch(json!({"values": {"credit": null}, "version": v1, "reason": "no credit"})).await;
    assert_eq!(s, 200);
    // Filters see the correction at once.
    let (_, l) = app.get_json("/v1/images?owner=hist&tags=dusk", ADMIN).await;
    assert_eq!(ids(&l), std::slice::from_ref(&id), "{l}");
    let (_, h) = app
        .get_json(&format!("/v1/images/{id}/history"), ADMIN)
        .await;
    let items = h["items"].as_array().unwrap();
    let summaries: Vec<&str> = items
        .iter()
        .map(|e| e["diff"]["summary"].as_str().unwrap())
        .collect();
    for want in [
        "title: set to \"Dune\"",
        "title: \"Dune\" → \"Dune at dusk\"",
        "keywords: +dusk −sea",
        "credit: set to \"Ann\"",
        "credit: cleared (was \"Ann\")",
    ] {
        assert!(summaries.contains(&want), "{want} missing in {summaries:?}");
    }
    let first_title = items.iter().find(|e| e["field"] == "title").unwrap();
    assert_eq!(first_title["source"], "upload", "{h}");
    let fix = items.iter().find(|e| e["reason"] == "typo").unwrap();
    assert_eq!(fix["source"], "person", "{h}");
    assert!(fix["actor"].as_str().unwrap().contains("admin"), "{h}");
    // Restore the version as uploaded: a new change, not a rewrite.
    let before = items.len();
    let (s, r) = send_json(
        app,
        Method::POST,
        &format!("/v1/images/{id}/history/{}/restore", first_title["id"]),
        ADMIN,
        &json!({"reason": "back to the original"}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["descriptive"]["values"]["title"], "Dune", "{r}");
    assert_eq!(
        r["descriptive"]["values"]["keywords"],
        json!(["sand", "sea"]),
        "{r}"
    );
    assert_eq!(
        r["descriptive"]["sources"]["title"]["source"], "restore",
        "{r}"
    );
    let (_, h2) = app
        .get_json(&format!("/v1/images/{id}/history"), ADMIN)
        .await;
    assert!(h2["items"].as_array().unwrap().len() > before, "{h2}");
    assert_eq!(h2["items"][0], h["items"][0], "history is never rewritten");

    // A new version of the image: listings show the current one only, unless asked.
    let (s, v) = upload_with(
        app,
        ADMIN,
        "hist",
        &[("derived_from", &id), ("relation", "version")],
        &jpeg(40, 30, 301),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let id2 = v["id"].as_str().unwrap().to_owned();
    app.wait_done(&id2, Duration::from_secs(60)).await;
    let (_, l) = app.get_json("/v1/images?owner=hist", ADMIN).await;
    assert_eq!(ids(&l), std::slice::from_ref(&id2), "{l}");
    let (_, l) = app
        .get_json("/v1/images?owner=hist&versions=all", ADMIN)
        .await;
    assert_eq!(ids(&l).len(), 2, "{l}");
    let (_, old) = app.get_json(&format!("/v1/images/{id}"), ADMIN).await;
    assert_eq!(old["lineage"]["current"], false, "{old}");
    let (_, new) = app.get_json(&format!("/v1/images/{id2}"), ADMIN).await;
    assert_eq!(new["lineage"]["version_number"], 2, "{new}");
    assert_eq!(new["lineage"]["derived_from"], id.as_str(), "{new}");
    let (_, h) = app
        .get_json(&format!("/v1/images/{id2}/history"), ADMIN)
        .await;
    let chain: Vec<(String, i64, bool)> = h["lineage"]["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["version_number"].as_i64().unwrap(),
                c["current"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        chain,
        [(id.clone(), 1, false), (id2.clone(), 2, true)],
        "{h}"
    );
    // A derivative linked afterwards; an exact duplicate names the image it duplicates.
    let (s, v) = upload_with(app, ADMIN, "hist", &[], &jpeg(20, 20, 302), None).await;
    assert_eq!(s, 201);
    let crop = v["id"].as_str().unwrap().to_owned();
    app.wait_done(&crop, Duration::from_secs(60)).await;
    let (s, l) = send_json(
        app,
        Method::PUT,
        &format!("/v1/images/{crop}/lineage"),
        ADMIN,
        &json!({"derived_from": id2, "relation": "derivative"}),
    )
    .await;
    assert_eq!(s, 200, "{l}");
    assert!(l["chain"].to_string().contains(&crop), "{l}");
    let (s, d) = upload_with(app, ADMIN, "hist", &[], &jpeg(20, 20, 302), None).await;
    assert_eq!(s, 409, "{d}");
    assert_eq!(d["existing_id"], crop.as_str());
}

#[tokio::test]
async fn corrections_history_restore_and_lineage() {
    for b in backends() {
        let app = App::spawn(Options::new(b)).await;
        history_restore_and_lineage(&app).await;
        app.cleanup().await;
    }
}

/// GETs an edge URL; the status.
pub(crate) async fn edge_status(app: &App, url: &str) -> u16 {
    app.req(Method::GET, url, None, None, Bytes::new())
        .await
        .status
}

/// The object keys in the withheld list the rights scheduler publishes.
fn withheld_list(app: &App) -> Vec<String> {
    published_keys(app, "keys")
}

/// One key list (`keys`: withheld, `signed_only`: private) of the object the rights
/// scheduler publishes for the edges.
pub(crate) fn published_keys(app: &App, list: &str) -> Vec<String> {
    let path = app.data_dir.join("objects/_flexphoto/withheld.json");
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    v[list]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Rights windows end to end with the real edge (`flexphoto up`): a window that has not
/// started withholds an image at once from listings, search and URLs, the scheduler records
/// it in the history and publishes the withheld list, and the edge stops serving URLs it
/// handed out before within the stated bound (rights_check_secs + withheld.poll_secs); a
/// cleared window releases it; URLs carry the window's end as their expiry and are refused
/// after it; images whose rights end soon are listed and queued for review.
async fn rights_windows(app: &App) {
    let edge = app.edge.clone().unwrap();
    let mut id = Vec::new();
    for i in 0..3 {
        let (s, v) = upload_with(
            app,
            ADMIN,
            "rights",
            &[("title", &format!("rights {i}"))],
            &jpeg(64, 48, 300 + i),
            None,
        )
        .await;
        assert_eq!(s, 201, "{v}");
        id.push(v["id"].as_str().unwrap().to_owned());
    }
    let mut thumbs = Vec::new();
    for i in &id {
        let img = app.wait_done(i, Duration::from_secs(60)).await;
        let t = img["variants"]["thumb"].as_str().unwrap().to_owned();
        assert!(t.starts_with(&edge), "{t}");
        assert_eq!(edge_status(app, &t).await, 200, "{t}");
        thumbs.push(t);
    }
    let put_rights = |img: String, body: Value| async move {
        send_json(
            app,
            Method::PUT,
            &format!("/v1/images/{img}/rights"),
            ADMIN,
            &body,
        )
        .await
    };

    // Not started yet: withheld at once by the API.
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let (s, v) = put_rights(
        id[0].clone(),
        json!({"holder": "Agence X", "licence": "CC-BY-4.0", "valid_from": tomorrow, "reason": "embargo"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["rights"]["state"], "pending", "{v}");
    assert_eq!(v["rights"]["withheld"], true, "{v}");
    assert!(
        v["variants"].as_object().is_none_or(|m| m.is_empty()),
        "{v}"
    );
    let (_, l) = app.get_json("/v1/images?owner=rights", ADMIN).await;
    assert!(!ids(&l).contains(&id[0]), "{l}");
    assert_eq!(ids(&l).len(), 2, "{l}");
    let (_, l) = app
        .get_json("/v1/images?owner=rights&rights=withheld", ADMIN)
        .await;
    assert_eq!(ids(&l), [id[0].clone()], "{l}");
    let (s, e) = app
        .get_json(&format!("/v1/images/{}/url?w=50", id[0]), ADMIN)
        .await;
    assert_eq!(s, 409, "{e}");

    // The edge stops serving the URL it served before, within the bound (1 s + 1 s here).
    let start = std::time::Instant::now();
    let thumb0 = thumbs[0].clone();
    eventually("the edge to stop serving", Duration::from_secs(20), || {
        let t = thumb0.clone();
        async move { (edge_status(app, &t).await == 404).then_some(()) }
    })
    .await;
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "the edge stopped after {took:?}"
    );
    let original = v["keys"]["original"].as_str().unwrap().to_owned();
    let listed = withheld_list(app);
    assert!(listed.contains(&original), "{original} in {listed:?}");
    assert_eq!(edge_status(app, &thumbs[1]).await, 200);
    let (_, h) = app
        .get_json(&format!("/v1/images/{}/history", id[0]), ADMIN)
        .await;
    assert!(
        h["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["field"] == "rights_state"
                && e["reason"].as_str().unwrap_or("").contains("withheld")),
        "the scheduler's change is in the history: {h}"
    );

    // Cleared: released again, and the edge serves it within the bound.
    let (s, v) = put_rights(
        id[0].clone(),
        json!({"holder": "Agence X", "licence": "CC-BY-4.0", "reason": "embargo lifted"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["rights"]["state"], "clear", "{v}");
    eventually("the edge to serve again", Duration::from_secs(20), || {
        let t = thumb0.clone();
        async move { (edge_status(app, &t).await == 200).then_some(()) }
    })
    .await;

    // Ending in three days: URLs carry the end as their expiry; listed as expiring and queued.
    let until = chrono::Utc::now() + chrono::Duration::days(3);
    let (s, v) = put_rights(
        id[1].clone(),
        json!({"holder": "Studio Y", "valid_until": until.to_rfc3339()}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // The edge accepts a URL through second `exp`: one second before the end.
    let exp = format!("exp={}", until.timestamp() - 1);
    let thumb = v["variants"]["thumb"].as_str().unwrap();
    assert!(thumb.contains(&exp), "{thumb} should carry {exp}");
    assert_eq!(edge_status(app, thumb).await, 200, "{thumb}");
    let (s, u) = app
        .get_json(&format!("/v1/images/{}/url?w=50", id[1]), ADMIN)
        .await;
    assert_eq!(s, 200, "{u}");
    assert!(u["url"].as_str().unwrap().contains(&exp), "{u}");
    let (_, x) = app
        .get_json("/v1/rights/expiring?owner=rights&days=7", ADMIN)
        .await;
    assert_eq!(ids(&x), [id[1].clone()], "{x}");
    assert!(
        (2..=3).contains(&x["items"][0]["days_left"].as_i64().unwrap()),
        "{x}"
    );
    eventually(
        "rights ending in the queue",
        Duration::from_secs(20),
        || async {
            let (_, q) = app
                .get_json("/v1/review/queue?owner=rights&reason=rights_ending", ADMIN)
                .await;
            (ids(&q) == [id[1].clone()]).then_some(())
        },
    )
    .await;

    // Ending in seconds: served until then, refused after (the URL's expiry), withheld from
    // listings and listed for the edges by the scheduler.
    let until = chrono::Utc::now() + chrono::Duration::seconds(4);
    let (s, v) = put_rights(id[2].clone(), json!({"valid_until": until.to_rfc3339()})).await;
    assert_eq!(s, 200, "{v}");
    let thumb2 = v["variants"]["thumb"].as_str().unwrap().to_owned();
    assert_eq!(edge_status(app, &thumb2).await, 200, "{thumb2}");
    let original2 = v["keys"]["original"].as_str().unwrap().to_owned();
    eventually("the window to close", Duration::from_secs(30), || async {
        let (_, l) = app
            .get_json("/v1/images?owner=rights&rights=withheld", ADMIN)
            .await;
        ids(&l).contains(&id[2]).then_some(())
    })
    .await;
    assert_ne!(
        edge_status(app, &thumb2).await,
        200,
        "{thumb2} after the window"
    );
    let (_, l) = app.get_json("/v1/images?owner=rights", ADMIN).await;
    assert!(!ids(&l).contains(&id[2]), "{l}");
    eventually(
        "the closed window in the list",
        Duration::from_secs(20),
        || {
            let o = original2.clone();
            async move { withheld_list(app).contains(&o).then_some(()) }
        },
    )
    .await;
}

/// `flexphoto up` with signing keys shared with its edge, an edge admin token, and the rights
/// pass and the edge's list poll every second: the setting for tests of what the edges are
/// told through the published list.
pub(crate) fn signed_edge_with_fast_lists(b: Backend) -> Options {
    let mut o = Options::new(b)
        .env(
            "FLEXPHOTO_EDGE_SIGNING_KEYS",
            "00112233445566778899aabbccddeeff",
        )
        .env("FLEXPHOTO_EDGE__SERVER__ADMIN_TOKEN", "edge-admin-token")
        .env("FLEXPHOTO__CATALOG__RIGHTS_CHECK_SECS", "1")
        .env("FLEXPHOTO__CATALOG__PURGE_DELAY_SECS", "1")
        .env("FLEXPHOTO_EDGE__WITHHELD__POLL_SECS", "1");
    o.up = true;
    o
}

#[tokio::test]
async fn rights_windows_withhold_and_release_through_the_edge() {
    for b in backends() {
        let app = App::spawn(signed_edge_with_fast_lists(b)).await;
        rights_windows(&app).await;
        app.cleanup().await;
    }
}

/// Runs `flexphoto import` against `app`; (success, stdout).
fn run_import(app: &App, dir: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flexphoto"))
        .args([
            "import",
            dir.to_str().unwrap(),
            "--owner",
            "imp",
            "--api",
            &app.base,
            "--key",
            ADMIN,
        ])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), format!("{stdout}\n{stderr}"))
}

/// `flexphoto import` with a CSV manifest and XMP sidecars: values arrive with their sources
/// (`csv`, `sidecar`), a reviewing collection accepts an invalid photo and routes it to
/// review, a refusing one refuses it with every failing field and rule.
async fn import_with_manifest_and_sidecars(app: &App) {
    for (name, on_invalid) in [("archive", "review"), ("strict", "refuse")] {
        let toml = PRESS_TOML
            .replace("owner = \"press\"", "owner = \"imp\"")
            .replace("name = \"press-2026\"", &format!("name = \"{name}\""))
            .replace(
                "on_invalid = \"refuse\"",
                &format!("on_invalid = \"{on_invalid}\""),
            );
        let (s, c) = send_toml(app, Method::POST, "/v1/collections", ADMIN, &toml).await;
        assert_eq!(s, 201, "{c}");
    }
    let dir = app.data_dir.join("import-catalog");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a.jpg"), jpeg(80, 60, 500)).unwrap();
    std::fs::write(dir.join("sub/b.jpg"), jpeg(80, 60, 501)).unwrap();
    std::fs::write(dir.join("sub/b.xmp"), SIDECAR).unwrap();
    std::fs::write(dir.join("c.jpg"), jpeg(80, 60, 502)).unwrap();
    let manifest = app.data_dir.join("manifest.csv");
    std::fs::write(
        &manifest,
        "file,photographer_id,usage,credit,keywords\n\
         a.jpg,P0001,editorial,Desk A,\"dune; sea\"\n\
         sub/b.jpg,,commercial,Desk B,\n\
         c.jpg,P0003,,Desk C,\n",
    )
    .unwrap();
    let m = manifest.to_str().unwrap();
    let (ok, out) = run_import(app, &dir, &["--collection", "archive", "--manifest", m]);
    assert!(ok, "{out}");
    assert!(
        out.contains("imported 3 new, 0 duplicates, 0 failed, of 3"),
        "{out}"
    );
    assert!(
        out.contains(
            "routed to review 1, refused by validation 0; with a sidecar 1, with manifest values 3"
        ),
        "{out}"
    );
    let (_, l) = app
        .get_json("/v1/images?owner=imp&collection=archive", ADMIN)
        .await;
    let items = l["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 3, "{l}");
    let by_credit = |credit: &str| {
        items
            .iter()
            .find(|i| i["descriptive"]["values"]["credit"] == credit)
            .unwrap_or_else(|| panic!("no image credited {credit}: {l}"))
            .clone()
    };
    let a = by_credit("Desk A");
    assert_eq!(
        a["descriptive"]["sources"]["photographer_id"]["source"], "csv",
        "{a}"
    );
    assert_eq!(
        a["descriptive"]["values"]["keywords"],
        json!(["dune", "sea"]),
        "{a}"
    );
    let b = by_credit("Desk B");
    assert_eq!(
        b["descriptive"]["values"]["photographer_id"], "P0042",
        "{b}"
    );
    assert_eq!(
        b["descriptive"]["sources"]["photographer_id"]["source"], "sidecar",
        "{b}"
    );
    assert_eq!(b["descriptive"]["sources"]["usage"]["source"], "csv", "{b}");
    let c = by_credit("Desk C");
    assert_eq!(c["workflow"]["state"], "in_review", "{c}");
    let failures = c["descriptive"]["validation"].to_string();
    assert!(failures.contains("usage"), "{c}");

    // The refusing collection refuses the invalid photo, naming the field and rule.
    let dir2 = app.data_dir.join("import-strict");
    std::fs::create_dir_all(&dir2).unwrap();
    std::fs::write(dir2.join("c.jpg"), jpeg(80, 60, 503)).unwrap();
    std::fs::write(dir2.join("d.jpg"), jpeg(80, 60, 504)).unwrap();
    let manifest2 = app.data_dir.join("manifest2.csv");
    std::fs::write(
        &manifest2,
        "file,photographer_id,usage,credit\nc.jpg,P0003,,Desk C\nd.jpg,P0004,editorial,Desk D\n",
    )
    .unwrap();
    let (ok, out) = run_import(
        app,
        &dir2,
        &[
            "--collection",
            "strict",
            "--manifest",
            manifest2.to_str().unwrap(),
        ],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("imported 1 new, 0 duplicates, 1 failed, of 2"),
        "{out}"
    );
    assert!(out.contains("refused by validation 1"), "{out}");
    assert!(out.contains("HTTP 422") && out.contains("usage"), "{out}");
}

#[tokio::test]
async fn import_with_a_manifest_and_sidecars() {
    for b in backends() {
        let app = App::spawn(Options::new(b)).await;
        import_with_manifest_and_sidecars(&app).await;
        app.cleanup().await;
    }
}
