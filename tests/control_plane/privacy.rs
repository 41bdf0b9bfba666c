//! Private images end to end with the real edge (`flexphoto up`, signing on): a private
//! image's URLs are signed and expire, its unsigned preset URLs are refused by the edge, and
//! making a public image private stops the unsigned URLs the edge served (and kept ready)
//! before, with the change in the image's history.

use std::time::Duration;

use serde_json::{json, Value};

use crate::catalog::{
    edge_status, eventually, published_keys, signed_edge_with_fast_lists, upload_with,
};
use crate::helpers::{backends, jpeg, App, ADMIN};

/// The unsigned `preset=thumb` URL of an image's original on the edge.
fn unsigned_preset(doc: &Value) -> String {
    let signed = doc["original_url"].as_str().unwrap();
    let base = signed.split('?').next().unwrap();
    format!("{base}?preset=thumb")
}

async fn private_images(app: &App) {
    let now = chrono::Utc::now().timestamp();
    // A public image: signed URLs without expiry, and the unsigned preset serves.
    let (s, v) = upload_with(app, ADMIN, "priv", &[], &jpeg(64, 48, 700), None).await;
    assert_eq!(s, 201, "{v}");
    let public_id = v["id"].as_str().unwrap().to_owned();
    let public = app.wait_done(&public_id, Duration::from_secs(60)).await;
    assert_eq!(public["private"], false, "{public}");
    let thumb = public["variants"]["thumb"].as_str().unwrap();
    assert!(!thumb.contains("exp="), "{thumb}");
    let open = unsigned_preset(&public);
    assert_eq!(edge_status(app, &open).await, 200, "{open}");
    // Twice: the second answer comes from the edge's ready fast path.
    assert_eq!(edge_status(app, &open).await, 200, "{open}");

    // A private upload: every URL signed with an expiry about url_ttl_secs ahead, no template.
    let (s, v) = upload_with(
        app,
        ADMIN,
        "priv",
        &[("private", "true")],
        &jpeg(64, 48, 701),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let private_id = v["id"].as_str().unwrap().to_owned();
    let private = app.wait_done(&private_id, Duration::from_secs(60)).await;
    assert_eq!(private["private"], true, "{private}");
    assert!(private["url_template"].is_null(), "{private}");
    let exp_of = |url: &str| -> i64 {
        let q = url.split('?').nth(1).unwrap_or("");
        q.split('&')
            .find_map(|p| p.strip_prefix("exp="))
            .unwrap_or_else(|| panic!("{url} has no exp"))
            .parse()
            .unwrap()
    };
    let pthumb = private["variants"]["thumb"].as_str().unwrap().to_owned();
    let exp = exp_of(&pthumb);
    assert!(
        (now + 3600..now + 3600 + 700).contains(&exp),
        "exp {exp} vs now {now}"
    );
    assert!(pthumb.contains("sig="), "{pthumb}");
    assert_eq!(edge_status(app, &pthumb).await, 200, "{pthumb}");
    let (s, u) = app
        .get_json(&format!("/v1/images/{private_id}/url?w=40"), ADMIN)
        .await;
    assert_eq!(s, 200, "{u}");
    let sized = u["url"].as_str().unwrap().to_owned();
    assert!(exp_of(&sized) <= exp, "{sized}");
    assert_eq!(edge_status(app, &sized).await, 200, "{sized}");
    // The edges learn it is private from the published list and refuse unsigned presets.
    let original = private["keys"]["original"].as_str().unwrap().to_owned();
    let closed = unsigned_preset(&private);
    eventually(
        "the edge to refuse the unsigned preset",
        Duration::from_secs(20),
        || {
            let u = closed.clone();
            async move { (edge_status(app, &u).await == 403).then_some(()) }
        },
    )
    .await;
    assert!(published_keys(app, "signed_only").contains(&original));
    // A search result carries the same expiring URLs.
    let (s, l) = app.get_json("/v1/images?owner=priv", ADMIN).await;
    assert_eq!(s, 200, "{l}");
    let listed = l["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == private_id.as_str())
        .cloned()
        .unwrap();
    assert!(
        listed["variants"]["thumb"]
            .as_str()
            .unwrap()
            .contains("exp="),
        "{listed}"
    );

    // Made private later: its URLs expire, the unsigned URL the edge served (and kept as a
    // ready answer) is refused, and the history says who did it and why.
    let r = app
        .patch_json(
            &format!("/v1/images/{public_id}"),
            ADMIN,
            &json!({"private": true, "reason": "model release withdrawn"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let doc: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(doc["private"], true, "{doc}");
    assert!(
        doc["original_url"].as_str().unwrap().contains("exp="),
        "{doc}"
    );
    eventually(
        "the edge to refuse the old unsigned URL",
        Duration::from_secs(20),
        || {
            let u = open.clone();
            async move { (edge_status(app, &u).await == 403).then_some(()) }
        },
    )
    .await;
    let (_, h) = app
        .get_json(&format!("/v1/images/{public_id}/history"), ADMIN)
        .await;
    assert!(
        h["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["field"] == "private"
                && e["new_value"] == true
                && e["reason"] == "model release withdrawn"),
        "{h}"
    );
    // And public again: the unsigned preset serves again.
    let r = app
        .patch_json(
            &format!("/v1/images/{public_id}"),
            ADMIN,
            &json!({"private": false}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    eventually(
        "the edge to serve the preset again",
        Duration::from_secs(20),
        || {
            let u = open.clone();
            async move { (edge_status(app, &u).await == 200).then_some(()) }
        },
    )
    .await;
    // A bad value is refused with a message that names the field.
    let (s, v) = upload_with(
        app,
        ADMIN,
        "priv",
        &[("private", "maybe")],
        &jpeg(64, 48, 702),
        None,
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("private"), "{v}");
}

#[tokio::test]
async fn private_images_need_signed_expiring_urls_at_the_edge() {
    for b in backends() {
        let app = App::spawn(signed_edge_with_fast_lists(b)).await;
        private_images(&app).await;
        app.cleanup().await;
    }
}
