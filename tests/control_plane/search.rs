//! Search end to end on the real binary with the real default model and the embedded index:
//! text, "more like this" and query-image search with filters inside the vector search,
//! cursors, explanations, near-duplicates with review routing, deletion, restart, drift
//! repair, and re-embedding after a model change. The Qdrant-server variant runs when
//! `QDRANT_URL` is set.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::{json, Value};

use crate::helpers::{
    backends, fixtures, jpeg, json_of, models, App, Backend, Multipart, Options, ADMIN,
};

/// Uploads the labelled photos under `owner`; returns (file name, id) once all are ready.
async fn upload_labelled(app: &App, dir: &Path, owner: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for n in 1..=13 {
        let name = if n == 1 || n == 9 {
            format!("img-{n:02}.png")
        } else {
            format!("img-{n:02}.jpg")
        };
        let data = std::fs::read(dir.join("labelled").join(&name)).unwrap();
        let (s, v) = app.upload(ADMIN, owner, &name, &data).await;
        assert_eq!(s, 201, "{name}: {v}");
        out.push((name, v["id"].as_str().unwrap().to_owned()));
    }
    for (name, id) in &out {
        let img = app.wait_done(id, Duration::from_secs(300)).await;
        assert_eq!(img["status"], "ready", "{name}: {img}");
    }
    out
}

fn id_of<'a>(set: &'a [(String, String)], name: &str) -> &'a str {
    &set.iter().find(|(n, _)| n == name).unwrap().1
}

fn ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {v}"))
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Asserts that `v` lists `portrait` and none of `faceless` (`portrait_in`), or every one of
/// `faceless` and not `portrait` (otherwise).
fn assert_split(v: &Value, portrait: &str, faceless: &[&str], portrait_in: bool) {
    let got = ids(v);
    assert_eq!(got.contains(&portrait.to_owned()), portrait_in, "{v}");
    assert!(
        faceless
            .iter()
            .all(|f| got.contains(&f.to_string()) != portrait_in),
        "{v}"
    );
}

async fn search(app: &App, body: Value) -> Value {
    let (s, v) = app.post_json("/v1/search", ADMIN, &body).await;
    assert_eq!(s, 200, "{body} → {v}");
    v
}

/// Waits until no job of any kind is queued or running (duplicates, payload syncs).
async fn wait_idle(app: &App) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, st) = app.get_json("/v1/jobs/stats", ADMIN).await;
        let jobs = &st["queue"]["jobs"];
        if jobs["queued"].is_null() && jobs["running"].is_null() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "queue never drained: {st}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn multipart_search(app: &App, fields: &[(&str, &str)], image: &[u8]) -> (u16, Value) {
    let mut form = Multipart::new();
    for (k, v) in fields {
        form = form.text(k, v);
    }
    app.post_form(
        "/v1/search",
        ADMIN,
        form.file("image", "q.jpg", "image/jpeg", image),
    )
    .await
}

/// Half-size, re-encoded copy of a photo (a near-duplicate).
fn half_size(data: &[u8]) -> Vec<u8> {
    flexphoto_media::vips::init(1).unwrap();
    let b = Bytes::copy_from_slice(data);
    let full = flexphoto_media::vips::Image::thumbnail(
        &b,
        100_000,
        100_000,
        flexphoto_media::vips::Size::Down,
        flexphoto_media::vips::Interesting::None,
        true,
        false,
    )
    .unwrap();
    let half = flexphoto_media::vips::Image::thumbnail(
        &b,
        full.width() / 2,
        full.height() / 2,
        flexphoto_media::vips::Size::Down,
        flexphoto_media::vips::Interesting::None,
        true,
        false,
    )
    .unwrap();
    half.save(".jpg[Q=80]").unwrap().to_vec()
}

async fn search_flow(app: &App, dir: &Path) {
    let set = upload_labelled(app, dir, "target").await;
    // Many images of other owners: an owner filter keeps only 13 of 43.
    let mut noise = Vec::new();
    for seed in 0..30u32 {
        let (s, v) = app
            .upload(
                ADMIN,
                &format!("noise{}", seed % 3),
                "n.jpg",
                &jpeg(320 + seed, 240, 900 + seed * 37),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        noise.push(v["id"].as_str().unwrap().to_owned());
    }
    for id in &noise {
        app.wait_done(id, Duration::from_secs(300)).await;
    }
    wait_idle(app).await;

    // Text search inside one owner's images: full page, right owner, the dog near the top,
    // with an explanation naming concepts and the filter.
    let v = search(
        app,
        json!({ "text": "a dog", "owner": "target", "limit": 5 }),
    )
    .await;
    let got = ids(&v);
    assert_eq!(got.len(), 5, "a selective filter still fills the page: {v}");
    let target: HashSet<&str> = set.iter().map(|(_, i)| i.as_str()).collect();
    assert!(got.iter().all(|i| target.contains(i.as_str())), "{v}");
    let dog = id_of(&set, "img-02.jpg");
    assert!(
        got[..3].contains(&dog.to_owned()),
        "the dog photo should rank in the top 3: {v}"
    );
    let first = &v["items"][0];
    assert!(first["score"].as_f64().is_some(), "{first}");
    let ex = &first["explanation"];
    assert!(!ex["summary"].as_str().unwrap().is_empty(), "{ex}");
    assert!(
        ex["filters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "owner = target"),
        "{ex}"
    );
    assert!(v["items"][0]["variants"]["thumb"].as_str().is_some(), "{v}");
    let scores: Vec<f64> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "best first: {scores:?}"
    );

    // Pages do not overlap and together are the first ten.
    let p1 = search(
        app,
        json!({ "text": "animals", "owner": "target", "limit": 4 }),
    )
    .await;
    let cursor = p1["next_cursor"].as_str().unwrap().to_owned();
    let p2 = search(
        app,
        json!({ "text": "animals", "owner": "target", "limit": 4, "cursor": cursor }),
    )
    .await;
    let (a, b): (HashSet<String>, HashSet<String>) = (
        ids(&p1).into_iter().collect(),
        ids(&p2).into_iter().collect(),
    );
    assert_eq!(a.len(), 4);
    assert_eq!(b.len(), 4);
    assert!(a.is_disjoint(&b), "{p1} / {p2}");

    // Tags filter, applied inside the search after an edit reaches the index.
    for name in ["img-05.jpg", "img-06.jpg"] {
        let (s, v) = app
            .req(
                Method::PATCH,
                &format!("/v1/images/{}", id_of(&set, name)),
                Some(ADMIN),
                Some("application/json"),
                Bytes::from(json!({ "tags": ["trip"] }).to_string()),
            )
            .await
            .status_and_json();
        assert_eq!(s, 200, "{v}");
    }
    wait_idle(app).await;
    let v = search(
        app,
        json!({ "text": "a cat", "tags": ["trip"], "limit": 10 }),
    )
    .await;
    let got: HashSet<String> = ids(&v).into_iter().collect();
    let want: HashSet<String> = ["img-05.jpg", "img-06.jpg"]
        .iter()
        .map(|n| id_of(&set, n).to_owned())
        .collect();
    assert_eq!(got, want, "only the tagged images, whatever the text: {v}");

    // Faces are counted at ingest and filter inside the vector search and in SQL listings:
    // the portrait has a face, the cat and the fruit have none.
    let portrait = id_of(&set, "img-10.jpg");
    let faceless = [id_of(&set, "img-01.png"), id_of(&set, "img-04.jpg")];
    let v = search(
        app,
        json!({ "text": "a person", "owner": "target", "faces_min": 1, "limit": 13 }),
    )
    .await;
    assert_split(&v, portrait, &faceless, true);
    let first = &v["items"][0];
    assert_eq!(
        first["id"], portrait,
        "the portrait ranks first for a person: {v}"
    );
    let matched = first["explanation"]["concepts"].to_string();
    assert!(
        ["person", "portrait", "woman"]
            .iter()
            .any(|c| matched.contains(c)),
        "the explanation names a face concept: {first}"
    );
    assert!(
        first["explanation"]["filters"]
            .to_string()
            .contains("faces >= 1"),
        "{first}"
    );
    let listed = search(
        app,
        json!({ "owner": "target", "faces_min": 1, "limit": 20 }),
    )
    .await;
    assert_split(&listed, portrait, &faceless, true);
    let none = search(
        app,
        json!({ "owner": "target", "faces_max": 0, "limit": 20 }),
    )
    .await;
    assert_split(&none, portrait, &faceless, false);
    // People, counted by the object detector in any pose, filter the same way.
    let people = search(
        app,
        json!({ "text": "a person", "owner": "target", "people_min": 1, "limit": 13 }),
    )
    .await;
    assert_split(&people, portrait, &faceless, true);
    assert!(
        people["items"][0]["explanation"]["filters"]
            .to_string()
            .contains("people >= 1"),
        "{people}"
    );
    let nobody = search(
        app,
        json!({ "owner": "target", "people_max": 0, "limit": 20 }),
    )
    .await;
    assert_split(&nobody, portrait, &faceless, false);

    // More like this: never the image itself; a half-size copy is the best match and is
    // recorded as a near-duplicate, which routes it to review with a reason.
    let dog_bytes = std::fs::read(dir.join("labelled/img-02.jpg")).unwrap();
    let (s, copy) = app
        .upload(ADMIN, "target", "copy.jpg", &half_size(&dog_bytes))
        .await;
    assert_eq!(s, 201, "{copy}");
    let copy_id = copy["id"].as_str().unwrap().to_owned();
    app.wait_done(&copy_id, Duration::from_secs(120)).await;
    wait_idle(app).await;
    let v = search(
        app,
        json!({ "like_image_id": dog, "owner": "target", "limit": 5 }),
    )
    .await;
    let got = ids(&v);
    assert!(!got.contains(&dog.to_owned()), "{v}");
    assert_eq!(got[0], copy_id, "{v}");
    let (s, d) = app
        .get_json(&format!("/v1/images/{copy_id}/duplicates"), ADMIN)
        .await;
    assert_eq!(s, 200, "{d}");
    let dups: Vec<&str> = d["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert!(dups.contains(&dog), "{d}");
    let cat = id_of(&set, "img-01.png");
    assert!(
        !dups.contains(&cat),
        "a different photo is not a duplicate: {d}"
    );
    let (_, d2) = app
        .get_json(&format!("/v1/images/{dog}/duplicates"), ADMIN)
        .await;
    assert!(
        d2["items"].to_string().contains(&copy_id),
        "pairs go both ways: {d2}"
    );
    let (_, h) = app
        .get_json(&format!("/v1/images/{copy_id}/history"), ADMIN)
        .await;
    assert_eq!(h["review_state"], "needs_review", "{h}");
    assert!(
        h["review_reason"]
            .as_str()
            .unwrap()
            .contains("near-duplicate"),
        "{h}"
    );
    assert_eq!(h["items"][0]["actor"], "ingest", "{h}");
    let (_, pairs) = app.get_json("/v1/duplicates?owner=target", ADMIN).await;
    assert!(!pairs["items"].as_array().unwrap().is_empty(), "{pairs}");
    let v = search(
        app,
        json!({ "text": "a dog", "review_state": "needs_review", "limit": 10 }),
    )
    .await;
    assert!(ids(&v).contains(&copy_id), "review state is a filter: {v}");

    // Reverse image search with an uploaded query image.
    let (s, v) = multipart_search(
        app,
        &[("owner", "target"), ("limit", "3")],
        &half_size(&std::fs::read(dir.join("labelled/img-11.jpg")).unwrap()),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(ids(&v)[0], id_of(&set, "img-11.jpg"), "{v}");
    let (s, v) = multipart_search(app, &[("owner", "target")], b"not an image at all").await;
    assert_eq!(s, 422, "{v}");

    // Deterministic sort without similarity, with a keyset cursor.
    let p1 = search(
        app,
        json!({ "owner": "target", "sort": "oldest", "limit": 5 }),
    )
    .await;
    assert_eq!(ids(&p1)[0], set[0].1, "oldest first: {p1}");
    let c = p1["next_cursor"].as_str().unwrap();
    let p2 = search(
        app,
        json!({ "owner": "target", "sort": "oldest", "limit": 5, "cursor": c }),
    )
    .await;
    assert_eq!(ids(&p2)[0], set[5].1, "{p2}");
    let newest = search(app, json!({ "owner": "target", "limit": 1 })).await;
    assert_eq!(ids(&newest)[0], copy_id, "{newest}");

    // Bad requests are refused with a reason.
    for (body, what) in [
        (json!({ "text": "x", "like_image_id": dog }), "two queries"),
        (
            json!({ "text": "x", "sort": "newest" }),
            "sort with similarity",
        ),
        (json!({ "text": "x", "limit": 0 }), "limit 0"),
        (json!({ "text": "x", "status": "nope" }), "bad status"),
        (json!({ "text": "x", "cursor": "zzz" }), "bad cursor"),
        (json!({ "txt": "x" }), "unknown field"),
        (
            json!({ "text": "x", "faces_min": 2, "faces_max": 1 }),
            "faces range upside down",
        ),
        (
            json!({ "text": "x", "people_min": 3, "people_max": 1 }),
            "people range upside down",
        ),
    ] {
        let (s, v) = app.post_json("/v1/search", ADMIN, &body).await;
        assert_eq!(s, 400, "{what}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty(), "{v}");
    }
    let (s, _) = app
        .post_json(
            "/v1/search",
            ADMIN,
            &json!({ "like_image_id": uuid::Uuid::new_v4() }),
        )
        .await;
    assert_eq!(s, 404);

    // A scoped key sees only its owner's images; another owner is refused.
    let scoped = app.key("viewer", Some("noise1")).await;
    let (s, v) = app
        .post_json(
            "/v1/search",
            &scoped,
            &json!({ "text": "a dog", "limit": 50 }),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["owner"] == "noise1"),
        "{v}"
    );
    let (s, _) = app
        .post_json(
            "/v1/search",
            &scoped,
            &json!({ "text": "a dog", "owner": "target" }),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = app
        .post_json("/v1/search", "not-a-key", &json!({ "text": "a dog" }))
        .await;
    assert_eq!(s, 401);

    // Deleting an image removes it from search.
    let r = app.delete(&format!("/v1/images/{copy_id}"), ADMIN).await;
    assert_eq!(r.status, 204);
    let v = search(
        app,
        json!({ "like_image_id": dog, "owner": "target", "limit": 13 }),
    )
    .await;
    assert!(!ids(&v).contains(&copy_id), "{v}");
}

trait StatusJson {
    fn status_and_json(self) -> (u16, Value);
}

impl StatusJson for crate::helpers::Reply {
    fn status_and_json(self) -> (u16, Value) {
        (self.status, json_of(&self))
    }
}

/// The whole search API on SQLite and Postgres with the embedded index.
#[tokio::test]
async fn search_end_to_end() {
    let (Some(dir), Some(models)) = (fixtures(), models()) else {
        return;
    };
    for backend in backends() {
        eprintln!("search_end_to_end on {backend:?}");
        let app = App::spawn(Options::new(backend).with_search(&models)).await;
        search_flow(&app, &dir).await;
        app.cleanup().await;
    }
}

/// The same flow against a Qdrant server, when one is configured.
#[tokio::test]
async fn search_on_a_qdrant_server() {
    let Ok(url) = std::env::var("QDRANT_URL") else {
        crate::skip::skip(
            "qdrant",
            "set QDRANT_URL=http://HOST:6334 to run search_on_a_qdrant_server",
        );
        return;
    };
    let (Some(dir), Some(models)) = (fixtures(), models()) else {
        return;
    };
    let collection = format!("fp_test_{}", uuid::Uuid::new_v4().simple());
    let app = App::spawn(
        Options::new(Backend::Sqlite)
            .with_search(&models)
            .env("FLEXPHOTO__SEARCH__INDEX", "server")
            .env("FLEXPHOTO__SEARCH__QDRANT_URL", url)
            .env("FLEXPHOTO__SEARCH__QDRANT_COLLECTION", collection),
    )
    .await;
    search_flow(&app, &dir).await;
    app.cleanup().await;
}

/// The index survives a restart; a lost index is rebuilt from SQL on start; a model change
/// re-embeds every image.
#[tokio::test]
async fn index_survives_restart_and_follows_model_changes() {
    let (Some(dir), Some(models)) = (fixtures(), models()) else {
        return;
    };
    let mut app = App::spawn(Options::new(Backend::Sqlite).with_search(&models)).await;
    let set = upload_labelled(&app, &dir, "r").await;
    wait_idle(&app).await;
    let before = search(&app, json!({ "text": "a bird", "owner": "r", "limit": 3 })).await;
    let model = before["model"].as_str().unwrap().to_owned();

    // Restart: same answers without re-embedding.
    app.stop();
    app.start();
    let after = search(&app, json!({ "text": "a bird", "owner": "r", "limit": 3 })).await;
    assert_eq!(ids(&before), ids(&after), "{before} / {after}");
    let (_, st) = app.get_json("/v1/jobs/stats", ADMIN).await;
    assert!(
        st["queue"]["by_kind"]["embed"].is_null(),
        "nothing re-embedded: {st}"
    );

    // The index directory is lost while stopped: reconciliation on start re-embeds.
    app.stop();
    std::fs::remove_dir_all(app.data_dir.join("index")).unwrap();
    app.start();
    wait_embeds_done(&app, set.len(), "index never rebuilt").await;
    let rebuilt = search(&app, json!({ "text": "a bird", "owner": "r", "limit": 3 })).await;
    assert_eq!(ids(&before), ids(&rebuilt), "{before} / {rebuilt}");

    // A model change (another ConSE concept count is another model version): every image is
    // re-embedded by the new model, and search answers with it.
    app.stop();
    app.env
        .insert("FLEXPHOTO__SEARCH__CONSE_TOP_K".into(), "3".into());
    app.start();
    wait_embeds_done(&app, 2 * set.len(), "no re-embedding").await;
    let changed = search(&app, json!({ "text": "a bird", "owner": "r", "limit": 3 })).await;
    assert_ne!(changed["model"].as_str().unwrap(), model, "{changed}");
    assert!(
        ids(&changed).contains(&id_of(&set, "img-06.jpg").to_owned()),
        "{changed}"
    );
    app.cleanup().await;
}

/// Index writes not yet flushed when the process dies (a flush interval longer than the
/// test) are lost with it; reconciliation at the next start finds the ready images without
/// vectors and embeds them again, and search finds every image as before.
#[tokio::test]
async fn index_writes_lost_in_a_crash_are_embedded_again() {
    let Some(models) = models() else {
        return;
    };
    let mut app = App::spawn(
        Options::new(Backend::Sqlite)
            .with_search(&models)
            .env("FLEXPHOTO__SEARCH__INDEX_FLUSH_MS", "60000"),
    )
    .await;
    // One owner each: near-duplicates are looked for per owner, and routing one to review
    // writes its payload, which flushes every vector before it.
    let owners = ["k0", "k1", "k2"];
    let mut uploaded = Vec::new();
    for (seed, owner) in owners.iter().enumerate() {
        let (s, v) = app
            .upload(ADMIN, owner, "p.jpg", &jpeg(320, 240, 700 + seed as u32))
            .await;
        assert_eq!(s, 201, "{v}");
        uploaded.push(v["id"].as_str().unwrap().to_owned());
    }
    for id in &uploaded {
        let img = app.wait_done(id, Duration::from_secs(120)).await;
        assert_eq!(img["status"], "ready", "{img}");
    }
    wait_idle(&app).await;
    let expected: Vec<Vec<String>> = uploaded.iter().map(|id| vec![id.clone()]).collect();
    assert_eq!(found_per_owner(&app, &owners).await, expected);

    app.kill9();
    app.start();
    wait_embeds_done(
        &app,
        uploaded.len(),
        "the lost vectors were never embedded again",
    )
    .await;
    assert_eq!(found_per_owner(&app, &owners).await, expected);
    app.cleanup().await;
}

/// Waits until `n` `embed` jobs have finished in all; fails with `what` after three minutes.
async fn wait_embeds_done(app: &App, n: usize, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let (_, st) = app.get_json("/v1/jobs/stats", ADMIN).await;
        if st["queue"]["by_kind"]["embed"]["done"].as_i64() == Some(n as i64) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {st}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a text search finds among each owner's images, owner by owner.
async fn found_per_owner(app: &App, owners: &[&str]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for owner in owners {
        let q = json!({ "text": "a photo", "owner": owner, "limit": 10 });
        out.push(ids(&search(app, q).await));
    }
    out
}

/// With search off, filter-only search still works and similarity asks say why they cannot.
#[tokio::test]
async fn search_by_filters_only_when_the_model_is_off() {
    let app = App::spawn(Options::new(Backend::Sqlite)).await;
    let (s, v) = app.upload(ADMIN, "f", "a.jpg", &jpeg(64, 48, 1)).await;
    assert_eq!(s, 201, "{v}");
    app.wait_done(v["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    let v = search(&app, json!({ "owner": "f" })).await;
    assert_eq!(ids(&v).len(), 1, "{v}");
    let (s, v) = app
        .post_json("/v1/search", ADMIN, &json!({ "text": "x" }))
        .await;
    assert_eq!(s, 409, "{v}");
    app.cleanup().await;
}

/// Near-duplicates uploaded at once are processed side by side by the workers, yet every
/// pair ends up recorded once the queue has drained (each image's duplicate search runs after
/// its vectors are written, so the later of two sees the earlier). The same bytes sent twice
/// at once stay one image: one upload is created, the other answers 409 with its id.
#[tokio::test]
async fn concurrent_near_duplicates_are_all_linked() {
    let (Some(dir), Some(models)) = (fixtures(), models()) else {
        return;
    };
    flexphoto_media::vips::init(1).unwrap();
    let original = Bytes::from(std::fs::read(dir.join("labelled/img-02.jpg")).unwrap());
    let edits = flexphoto_control_plane::search::eval::edits(&original).unwrap();
    let mut files: Vec<(String, Vec<u8>)> = vec![("original.jpg".into(), original.to_vec())];
    files.extend(
        edits
            .into_iter()
            .filter(|(kind, _)| ["half", "q30", "crop5"].contains(kind))
            .map(|(kind, b)| (format!("{kind}.jpg"), b.to_vec())),
    );
    assert_eq!(files.len(), 4, "edits: {:?}", files.iter().map(|f| &f.0));
    // The original twice: the same bytes at the same moment.
    files.push(("again.jpg".into(), original.to_vec()));
    for backend in backends() {
        eprintln!("concurrent_near_duplicates_are_all_linked on {backend:?}");
        let app = App::spawn(Options::new(backend).with_search(&models)).await;
        // All at once; an upload the loaded worker pool turns away (503 busy) is sent again,
        // as a client would.
        let answers = futures_util::future::join_all(files.iter().map(|(name, data)| async {
            let mut tries = 0;
            loop {
                let (s, v) = app.upload(ADMIN, "dups", name, data).await;
                tries += 1;
                if s != 503 || tries == 20 {
                    return (s, v);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }))
        .await;
        let (first, again) = (&answers[0], &answers[4]);
        let created: Vec<&Value> = answers
            .iter()
            .filter(|(s, _)| *s == 201)
            .map(|(_, v)| v)
            .collect();
        assert_eq!(created.len(), 4, "{answers:?}");
        let (dup, kept) = if first.0 == 409 {
            (first, again)
        } else {
            (again, first)
        };
        assert_eq!(dup.0, 409, "{answers:?}");
        assert_eq!(dup.1["existing_id"], kept.1["id"], "{answers:?}");
        let ids: Vec<String> = created
            .iter()
            .map(|v| v["id"].as_str().unwrap().to_owned())
            .collect();
        for id in &ids {
            let img = app.wait_done(id, Duration::from_secs(300)).await;
            assert_eq!(img["status"], "ready", "{img}");
        }
        wait_idle(&app).await;
        for id in &ids {
            let (s, d) = app
                .get_json(&format!("/v1/images/{id}/duplicates"), ADMIN)
                .await;
            assert_eq!(s, 200, "{d}");
            let linked: HashSet<&str> = d["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|x| x["id"].as_str())
                .collect();
            for other in ids.iter().filter(|o| *o != id) {
                assert!(linked.contains(other.as_str()), "{id} misses {other}: {d}");
            }
        }
        app.cleanup().await;
    }
}
