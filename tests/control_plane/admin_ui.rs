//! The admin web UI end to end: the real `flexphoto up` (API, workers and edge) and headless
//! Chromium through chromedriver. Signs in, uploads three photos by the file input, searches
//! by text and by image, corrects a caption and restores it from the history, works the
//! review queue, opens the operations and cost page, checks a phone-sized layout, and runs
//! axe-core on every page (no serious or critical violations). Screenshots of each page go
//! to `target/ui-screenshots/`. Also the session's security at the HTTP level: cookie flags,
//! CSRF, cross-site origins, cache-busted assets and the Content-Security-Policy.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::{json, Value};

use crate::helpers::{jpeg, json_of, models, send, App, Backend, Options, ADMIN};
use crate::webdriver::{axe_source, Browser, Until};

const WAIT: Duration = Duration::from_secs(60);

/// Signs in over HTTP; returns the cookie header value and the CSRF token.
async fn http_sign_in(app: &App, key: &str) -> (String, String) {
    let r = send(
        Method::POST,
        &format!("{}/admin/api/session", app.base),
        &[("content-type", "application/json")],
        Bytes::from(json!({ "key": key }).to_string()),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "{:?}", r.body);
    let set = r.headers["set-cookie"].to_str().unwrap().to_owned();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_owned();
    let csrf = json_of(&r)["csrf_token"].as_str().unwrap().to_owned();
    (cookie, csrf)
}

async fn call(
    app: &App,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (u16, Value) {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    let r = send(
        method,
        &format!("{}{path}", app.base),
        &h,
        body,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    (r.status, json_of(&r))
}

/// The session at the HTTP level: what a browser page relies on.
async fn session_security(app: &App, image_id: &str) {
    // The page shell: strict CSP, not cached; assets versioned and immutable.
    let r = send(
        Method::GET,
        &format!("{}/admin/library", app.base),
        &[],
        Bytes::new(),
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let csp = r.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    let html = String::from_utf8_lossy(&r.body).into_owned();
    let main_js = html
        .split('"')
        .find(|s| s.starts_with("/admin/assets/") && s.ends_with("/js/main.js"))
        .expect("versioned script URL")
        .to_owned();
    let r = send(
        Method::GET,
        &format!("{}{main_js}", app.base),
        &[("accept-encoding", "gzip")],
        Bytes::new(),
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.headers["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    assert_eq!(r.headers["content-encoding"], "gzip");
    let stale = main_js.replace("/admin/assets/", "/admin/assets/0");
    let r = send(
        Method::GET,
        &format!("{}{stale}", app.base),
        &[],
        Bytes::new(),
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 404, "an old version's URL is not served");

    // A wrong key is refused; a good one gets a session.
    let (s, _) = call(
        app,
        Method::POST,
        "/admin/api/session",
        &[],
        json!({ "key": "nope" }),
    )
    .await;
    assert_eq!(s, 401);
    let (cookie, csrf) = http_sign_in(app, ADMIN).await;
    let c = cookie.as_str();

    // Reads work with the cookie alone.
    let (s, v) = call(
        app,
        Method::GET,
        &format!("/v1/images/{image_id}"),
        &[("cookie", c)],
        Value::Null,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // A change without the CSRF token, or with a wrong one, is refused; with it, it passes.
    let path = format!("/v1/images/{image_id}");
    let body = json!({ "tags": ["csrf-checked"] });
    let (s, v) = call(app, Method::PATCH, &path, &[("cookie", c)], body.clone()).await;
    assert_eq!(s, 403, "{v}");
    let (s, _) = call(
        app,
        Method::PATCH,
        &path,
        &[("cookie", c), ("x-csrf-token", "wrong")],
        body.clone(),
    )
    .await;
    assert_eq!(s, 403);
    // A cross-site page cannot use the cookie for a change even with a token it guessed.
    let (s, _) = call(
        app,
        Method::PATCH,
        &path,
        &[
            ("cookie", c),
            ("x-csrf-token", &csrf),
            ("origin", "https://evil.example"),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(s, 403);
    let (s, v) = call(
        app,
        Method::PATCH,
        &path,
        &[("cookie", c), ("x-csrf-token", &csrf)],
        body,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["tags"], json!(["csrf-checked"]));
    // The session acts with its key's role: a viewer's session cannot change anything.
    let viewer = app.key("viewer", None).await;
    let (vc, vcsrf) = http_sign_in(app, &viewer).await;
    let (s, _) = call(
        app,
        Method::PATCH,
        &path,
        &[("cookie", &vc), ("x-csrf-token", &vcsrf)],
        json!({ "caption": "viewer was here" }),
    )
    .await;
    assert_eq!(s, 403);
    // Signing out ends the session everywhere.
    let (s, _) = call(
        app,
        Method::DELETE,
        "/admin/api/session",
        &[("cookie", c), ("x-csrf-token", &csrf)],
        Value::Null,
    )
    .await;
    assert_eq!(s, 204);
    let (s, _) = call(
        app,
        Method::GET,
        &format!("/v1/images/{image_id}"),
        &[("cookie", c)],
        Value::Null,
    )
    .await;
    assert_eq!(s, 401);
}

/// Signs out (when signed in) and signs in again with `key` in the browser.
async fn browser_sign_in(b: &Browser, base: &str, key: &str) {
    b.goto(&format!("{base}/admin/library")).await;
    b.wait_for(
        "the page",
        "return !!document.querySelector('input[name=key]') || !document.getElementById('top').hidden",
        WAIT,
    )
    .await;
    if b.js("return !document.getElementById('top').hidden", vec![])
        .await
        == json!(true)
    {
        b.click("#signout").await;
    }
    b.fill_and_submit(
        &[("input[name=key]", key)],
        "form button[type=submit]",
        Until::Script("signed in", "return !document.getElementById('top').hidden"),
        WAIT,
    )
    .await;
}

/// Runs axe in the page; collects serious/critical violations under `page`.
async fn axe(b: &Browser, axe: &str, page: &str, found: &mut Vec<String>) {
    for v in b.axe_serious(axe).await {
        found.push(format!("{page}: {v}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_ui_end_to_end() {
    let axe_js = axe_source();
    let models =
        models().expect("the admin UI test searches by text and image: run scripts/fetch-models");
    // The tiering pass every second: it records the storage snapshot the operations chart shows.
    let mut opts = Options::new(Backend::Sqlite)
        .with_search(&models)
        .env("FLEXPHOTO__TIERING__INTERVAL_SECS", "1");
    opts.up = true;
    let app = App::spawn(opts).await;
    let base = app.base.clone();
    let b = Browser::start(1280, 900).await;
    let mut violations = Vec::new();

    // Sign in.
    b.goto(&format!("{base}/admin")).await;
    b.find("input[name=key]", WAIT).await;
    b.screenshot("01-sign-in").await;
    axe(&b, &axe_js, "sign-in", &mut violations).await;
    let sign_in = "form button[type=submit]";
    b.fill_and_submit(
        &[("input[name=key]", "wrong-key")],
        sign_in,
        Until::Text("not valid"),
        WAIT,
    )
    .await;
    b.fill_and_submit(
        &[("input[name=key]", ADMIN)],
        sign_in,
        Until::Text("No images yet"),
        WAIT,
    )
    .await;
    // The cookie is HttpOnly: the page's script cannot read it.
    assert_eq!(b.js("return document.cookie", vec![]).await, json!(""));

    // Upload three photos by the file input; each becomes ready.
    let dir = app.data_dir.join("ui-files");
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<String> = (0..3)
        .map(|i| {
            let p = dir.join(format!("photo-{i}.jpg"));
            std::fs::write(&p, jpeg(640 + i * 64, 480, 40 + i)).unwrap();
            p.display().to_string()
        })
        .collect();
    b.click_until(
        "nav a[href='/admin/upload']",
        Until::Element("input[name=owner]"),
        WAIT,
    )
    .await;
    // A file that is not a picture fails, with the reason shown on its row.
    let junk = dir.join("broken.gif");
    std::fs::write(
        &junk,
        b"GIF89a but then nothing that decodes at all, just words",
    )
    .unwrap();
    let junk = junk.display().to_string();
    b.fill(
        &[("input[name=owner]", "bob"), ("input[type=file]", &junk)],
        WAIT,
    )
    .await;
    b.wait_for(
        "the broken upload failed with a reason",
        "const li = document.querySelector('li.upload[data-state=failed]'); return !!li && li.innerText.includes('failed: ') && li.innerText.length > 40",
        Duration::from_secs(120),
    )
    .await;
    b.fill(
        &[
            ("input[name=owner]", "alice"),
            ("input[name=caption]", "harbour at dawn"),
            ("input[type=file]", &files.join("\n")),
        ],
        WAIT,
    )
    .await;
    b.wait_for(
        "three uploads ready",
        "return document.querySelectorAll('li.upload[data-state=ready]').length === 3",
        Duration::from_secs(180),
    )
    .await;
    b.screenshot("02-upload").await;
    axe(&b, &axe_js, "upload", &mut violations).await;

    // The library shows them with edge thumbnails (srcset, lazy).
    b.click_until(
        "nav a[href='/admin/library']",
        Until::Script(
            "three tiles",
            "return document.querySelectorAll('.grid li.tile').length === 3",
        ),
        WAIT,
    )
    .await;
    b.wait_for(
        "thumbnails loaded from the edge",
        "return [...document.querySelectorAll('.grid img')].every(i => i.complete && i.naturalWidth > 0 && i.srcset && i.loading === 'lazy')",
        WAIT,
    )
    .await;
    b.screenshot("03-library").await;
    axe(&b, &axe_js, "library", &mut violations).await;
    let ids: Vec<String> = b
        .js("return [...document.querySelectorAll('.grid li.tile a')].map(a => a.getAttribute('href').split('/').pop())", vec![])
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);

    // Search by text: results with scores and an explanation.
    b.goto(&format!("{base}/admin/search?text=harbour")).await;
    b.wait_for(
        "text results",
        "return document.querySelectorAll('.results li.result').length === 3",
        WAIT,
    )
    .await;
    let text = b.page_text().await;
    assert!(
        text.contains("Score") && text.contains("mode text"),
        "{text}"
    );
    b.screenshot("04-search-text").await;
    axe(&b, &axe_js, "search", &mut violations).await;
    // Search by image (the drop zone's file input).
    b.goto(&format!("{base}/admin/search")).await;
    b.fill_and_submit(
        &[("#search-file", &files[1])],
        "form[role=search] button[type=submit]",
        Until::Text("mode image"),
        WAIT,
    )
    .await;
    b.wait_for(
        "image results",
        "return document.querySelectorAll('.results li.result .score').length >= 1",
        WAIT,
    )
    .await;
    b.screenshot("05-search-image").await;

    // Open an image, correct its caption, see the diff, restore the old value.
    let id = &ids[0];
    b.goto(&format!("{base}/admin/images/{id}")).await;
    b.find("textarea[name=caption]", WAIT).await;
    b.find("#history [data-loaded]", WAIT).await;
    b.fill_and_submit(
        &[
            ("textarea[name=caption]", "harbour at dusk"),
            ("input[name=reason]", "wrong time of day"),
        ],
        "form.edit button[type=submit]",
        Until::Script(
            "the correction in the history",
            "return [...document.querySelectorAll('table.history td.diff')].some(td => td.innerText.includes('harbour at dawn') && td.innerText.includes('harbour at dusk'))",
        ),
        WAIT,
    )
    .await;
    let (_, doc) = app.get_json(&format!("/v1/images/{id}"), ADMIN).await;
    assert_eq!(doc["caption"], "harbour at dusk");
    b.screenshot("06-image-corrected").await;
    axe(&b, &axe_js, "image", &mut violations).await;
    b.click_until(
        "table.history tbody tr:first-child button",
        Until::Script(
            "the restored caption",
            "return document.querySelector('textarea[name=caption]') && document.querySelector('textarea[name=caption]').value === 'harbour at dawn'",
        ),
        WAIT,
    )
    .await;
    let (_, doc) = app.get_json(&format!("/v1/images/{id}"), ADMIN).await;
    assert_eq!(doc["caption"], "harbour at dawn");
    // The signed URL builder gives an edge URL the browser can load.
    b.fill_and_submit(
        &[("input[name=w]", "200")],
        "form.grid-form button[type=submit]",
        Until::Script(
            "the sized preview",
            "const i = document.querySelector('img.preview'); return !!i && i.complete && i.naturalWidth === 200",
        ),
        WAIT,
    )
    .await;
    b.screenshot("07-image-restored").await;
    // Made private: its URLs become signed and expiring, and the picture still loads.
    b.click_until(
        "button[data-action=privacy]",
        Until::Text("private: signed URLs that expire"),
        WAIT,
    )
    .await;
    let (_, doc) = app.get_json(&format!("/v1/images/{id}"), ADMIN).await;
    assert_eq!(doc["private"], true, "{doc}");
    assert!(
        doc["original_url"].as_str().unwrap().contains("exp="),
        "{doc}"
    );
    b.wait_for(
        "the private picture loaded with a signed URL",
        "const i = document.querySelector('img.hero'); return !!i && i.currentSrc.includes('exp=') && i.complete && i.naturalWidth > 0",
        WAIT,
    )
    .await;

    review_queue(&app, &b, &base, &ids, &axe_js, &mut violations).await;

    // Operations: queue, edges, storage over time and the cost model with charts.
    let days = storage_history_days(&app).await;
    b.goto(&format!("{base}/admin/operations")).await;
    storage_chart(&b, &days).await;
    b.wait_text("Actual monthly bill", WAIT).await;
    b.wait_text("Jobs by kind and state", WAIT).await;
    // The broken upload's job is dead: retry it from the page.
    b.click_until(
        "button[aria-label^='Retry job']",
        Until::Text("queued again"),
        WAIT,
    )
    .await;
    b.click_until(
        "#cost form.grid-form:last-of-type button[type=submit]",
        Until::Script(
            "the projection chart",
            "return document.body.innerText.includes('Total over 24 months')",
        ),
        WAIT,
    )
    .await;
    b.screenshot("09-operations").await;
    b.js(
        "document.getElementById('storage-history').scrollIntoView()",
        vec![],
    )
    .await;
    b.screenshot("09b-storage-history").await;
    axe(&b, &axe_js, "operations", &mut violations).await;

    // Phone-sized screen: the library still works and passes the same checks.
    b.resize(390, 844).await;
    b.goto(&format!("{base}/admin/library")).await;
    b.wait_for(
        "tiles on a phone",
        "return document.querySelectorAll('.grid li.tile').length === 3",
        WAIT,
    )
    .await;
    let overflow = b
        .js(
            "return document.documentElement.scrollWidth > window.innerWidth + 1",
            vec![],
        )
        .await;
    assert_eq!(
        overflow,
        json!(false),
        "the library scrolls sideways on a phone"
    );
    b.screenshot("10-library-phone").await;
    axe(&b, &axe_js, "library (phone)", &mut violations).await;
    b.goto(&format!("{base}/admin/images/{id}")).await;
    b.find("textarea[name=caption]", WAIT).await;
    b.screenshot("11-image-phone").await;
    b.resize(1280, 900).await;

    // A viewer's session shows no upload, review or operations pages.
    let viewer = app.key("viewer", None).await;
    browser_sign_in(&b, &base, &viewer).await;
    b.find(".grid li.tile", WAIT).await;
    let nav = b
        .js("return document.getElementById('nav').innerText", vec![])
        .await;
    let nav = nav.as_str().unwrap();
    assert!(
        nav.contains("Library") && !nav.contains("Upload") && !nav.contains("Operations"),
        "{nav}"
    );

    session_security(&app, id).await;

    b.quit().await;
    app.cleanup().await;
    assert!(
        violations.is_empty(),
        "axe found serious or critical problems:\n{}",
        violations.join("\n")
    );
}

/// Storage history for the chart: three earlier days written into the SQLite file (this
/// deployment is new), and today's snapshot taken again by the tiering pass now that the
/// photos are stored (the one taken at start was empty). Returns the days, oldest first.
async fn storage_history_days(app: &App) -> Vec<String> {
    use sqlx::Connection;
    let (s, h) = app.get_json("/v1/storage/history", ADMIN).await;
    assert_eq!(s, 200, "{h}");
    let today: chrono::NaiveDate = h["items"][0]["day"].as_str().unwrap().parse().unwrap();
    let url = format!("sqlite:{}", app.data_dir.join("flexphoto.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("PRAGMA busy_timeout = 10000")
        .execute(&mut conn)
        .await
        .unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("DELETE FROM storage_history_days WHERE day = $1")
        .bind(today)
        .execute(&mut *tx)
        .await
        .unwrap();
    let earlier: [(i64, &[(&str, i64)]); 3] = [
        (6, &[("standard", 1_200_000)]),
        (4, &[("standard", 2_000_000), ("cold", 500_000)]),
        (1, &[("standard", 1_500_000), ("cold", 1_500_000)]),
    ];
    let mut days = Vec::new();
    for (back, tiers) in earlier {
        let day = today - chrono::Duration::days(back);
        days.push(day.to_string());
        sqlx::query("INSERT INTO storage_history_days (day, recorded_at) VALUES ($1, $2)")
            .bind(day)
            .bind(day.and_hms_opt(0, 5, 0).unwrap().and_utc())
            .execute(&mut *tx)
            .await
            .unwrap();
        for (tier, bytes) in tiers {
            sqlx::query(
                "INSERT INTO storage_history (day, tier, kind, objects, bytes, unmeasured) \
                 VALUES ($1, $2, 'original', 3, $3, 0)",
            )
            .bind(day)
            .bind(*tier)
            .bind(*bytes)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
    }
    tx.commit().await.unwrap();
    conn.close().await.unwrap();
    days.push(today.to_string());
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, h) = app.get_json("/v1/storage/history", ADMIN).await;
        let items = h["items"].as_array().unwrap();
        if items.len() == 4 && items[3]["tiers"][0]["bytes"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "today's snapshot was not taken again: {h}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    days
}

/// The operations page's storage chart: a stacked area per tier with a title and a
/// description naming the days, a legend, and the same figures as a table.
async fn storage_chart(b: &Browser, days: &[String]) {
    b.wait_until(
        Until::Element("#storage-history figure.chart svg polygon.area"),
        WAIT,
    )
    .await;
    let chart = b
        .js(
            "const box = document.getElementById('storage-history');
             const svg = box.querySelector('figure.chart svg');
             const named = (svg.getAttribute('aria-labelledby') || '').split(' ').map(id => document.getElementById(id));
             return {
               role: svg.getAttribute('role'),
               names: named.map(e => e ? e.tagName + ': ' + e.textContent : null),
               areas: [...svg.querySelectorAll('polygon.area')].map(p => [p.textContent, p.getAttribute('points').split(' ').length]),
               legend: [...box.querySelectorAll('.legend li')].map(li => li.textContent),
               rows: [...box.querySelectorAll('details table tbody tr')].map(tr => tr.querySelector('th').textContent),
             };",
            vec![],
        )
        .await;
    assert_eq!(chart["role"], "img", "{chart}");
    let names = chart["names"].as_array().unwrap();
    assert_eq!(names.len(), 2, "title and desc: {chart}");
    assert!(
        names[0]
            .as_str()
            .unwrap()
            .starts_with("title: Bytes stored by tier"),
        "{chart}"
    );
    let desc = names[1].as_str().unwrap();
    assert!(
        desc.starts_with(&format!(
            "desc: 4 daily snapshots from {} to {}",
            days[0], days[3]
        )),
        "{chart}"
    );
    assert!(
        desc.contains("cold: 0 B → 0 B") && desc.contains("standard: 1.2 MB →"),
        "{chart}"
    );
    // Hot at the bottom, cold on top; each band has a point per day along both edges.
    assert_eq!(
        chart["areas"],
        json!([["standard", 8], ["cold", 8]]),
        "{chart}"
    );
    assert_eq!(chart["legend"], json!(["standard", "cold"]), "{chart}");
    assert_eq!(chart["rows"], json!(days), "{chart}");
}

/// The review queue: approve one with the keyboard; a stale one (changed by someone else
/// after the page loaded) gets the conflict message.
async fn review_queue(
    app: &App,
    b: &Browser,
    base: &str,
    ids: &[String],
    axe_js: &str,
    found: &mut Vec<String>,
) {
    let r = app
        .req(Method::GET, "/openapi.json", None, None, Bytes::new())
        .await;
    let catalog = json_of(&r)["paths"].get("/v1/review/queue").is_some();
    for id in ids {
        let (path, body) = if catalog {
            (
                format!("/v1/images/{id}/workflow"),
                json!({ "to": "in_review", "reason": "looks blurry" }),
            )
        } else {
            (
                format!("/v1/images/{id}"),
                json!({ "review_state": "needs_review", "reason": "looks blurry" }),
            )
        };
        let method = if catalog { Method::POST } else { Method::PATCH };
        let r = app
            .req(
                method,
                &path,
                Some(ADMIN),
                Some("application/json"),
                Bytes::from(body.to_string()),
            )
            .await;
        // Near-duplicates may already wait for review (409: not a transition from there).
        assert!(
            r.status == 200 || (catalog && r.status == 409),
            "{}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // Decisions need another key than the uploader's (four eyes): a reviewer signs in.
    let reviewer = app.key("reviewer", None).await;
    browser_sign_in(b, base, &reviewer).await;
    b.goto(&format!("{base}/admin/review?owner=alice")).await;
    b.wait_for(
        "three items waiting",
        "return document.querySelectorAll('ol.queue li.item').length === 3",
        WAIT,
    )
    .await;
    // Each item says why it is there.
    b.wait_for("reasons", "return [...document.querySelectorAll('ol.queue li.item')].every(li => li.querySelector('.reasons li'))", WAIT).await;
    b.screenshot("08-review").await;
    axe(b, axe_js, "review", found).await;
    // Keyboard: focus the first item, approve it with "a".
    let first = b
        .js("const li = document.querySelector('ol.queue li.item'); li.focus(); return li.dataset.id", vec![])
        .await;
    let first = first.as_str().unwrap().to_owned();
    b.js(
        "document.activeElement.dispatchEvent(new KeyboardEvent('keydown', { key: 'a', bubbles: true }))",
        vec![],
    )
    .await;
    b.wait_for(
        "two left",
        "return document.querySelectorAll('ol.queue li.item').length === 2",
        WAIT,
    )
    .await;
    let (_, doc) = app.get_json(&format!("/v1/images/{first}"), ADMIN).await;
    assert_eq!(doc["review_state"], "approved", "{doc}");
    if catalog {
        // Someone else changes the next item after the page loaded it: approving it now is
        // refused with a clear message, and it stays in the queue.
        let next = b
            .js("const li = document.querySelector('ol.queue li.item'); li.focus(); return li.dataset.id", vec![])
            .await;
        let next = next.as_str().unwrap().to_owned();
        let r = app
            .req(
                Method::PATCH,
                &format!("/v1/images/{next}/metadata"),
                Some(ADMIN),
                Some("application/json"),
                Bytes::from(json!({ "values": { "caption": "changed meanwhile" } }).to_string()),
            )
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        b.js(
            "document.activeElement.dispatchEvent(new KeyboardEvent('keydown', { key: 'a', bubbles: true }))",
            vec![],
        )
        .await;
        b.wait_text("changed by another reviewer first", WAIT).await;
        b.screenshot("08b-review-conflict").await;
        let (_, doc) = app.get_json(&format!("/v1/images/{next}"), ADMIN).await;
        assert_ne!(doc["review_state"], "approved", "{doc}");
    }
    browser_sign_in(b, base, ADMIN).await;
}

/// Benchmark (ignored; run on purpose): the library page's first screen over
/// `FLEXPHOTO_UI_BENCH_N` images (default 100,000) in headless Chromium. One real photo is
/// uploaded, then its row is copied N times straight into the SQLite file (new ids and
/// upload times, same objects, so every thumbnail is a real edge URL). Reports, from the
/// browser's Performance API, the time from navigation start to the grid's first screen
/// painted and to every thumbnail in the viewport loaded; cold (empty browser cache) and
/// warm (median of 5). Recorded in loadtest/README.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test -p flexphoto-control-plane --test control_plane admin_ui_library_first_screen -- --ignored --nocapture"]
async fn admin_ui_library_first_screen() {
    let n: usize = std::env::var("FLEXPHOTO_UI_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let mut opts = Options::new(Backend::Sqlite);
    opts.up = true;
    let app = App::spawn(opts).await;
    let (s, v) = app
        .upload(ADMIN, "bench", "p.jpg", &jpeg(800, 600, 3))
        .await;
    assert_eq!(s, 201, "{v}");
    let seed_id = v["id"].as_str().unwrap().to_owned();
    app.wait_done(&seed_id, Duration::from_secs(60)).await;

    let started = std::time::Instant::now();
    seed_copies(&app, &seed_id, n).await;
    let seeded = started.elapsed();
    let (_, page) = app.get_json("/v1/owners", ADMIN).await;
    assert_eq!(page["items"][0]["images"], json!(n as i64 + 1), "{page}");

    let b = Browser::start(1280, 900).await;
    b.goto(&format!("{}/admin", app.base)).await;
    b.fill_and_submit(
        &[("input[name=key]", ADMIN)],
        "form button[type=submit]",
        Until::Element(".grid li.tile"),
        WAIT,
    )
    .await;
    // Each load is a full navigation; the scripts come from the browser cache (immutable),
    // as for anyone who opened the page before (signing in loaded them).
    let mut runs = Vec::new();
    for _ in 0..7 {
        b.goto(&format!("{}/admin/library", app.base)).await;
        b.wait_for(
            "the first screen",
            "return document.body.dataset.libraryReady === '1'",
            WAIT,
        )
        .await;
        let t = b
            .js_async(
                "const done = arguments[arguments.length - 1];
                 const painted = performance.getEntriesByName('library-first-screen')[0].startTime;
                 const visible = () => [...document.querySelectorAll('.grid img')].filter(i => { const r = i.getBoundingClientRect(); return r.top < innerHeight && r.bottom > 0; });
                 const check = () => { const v = visible(); if (v.length && v.every(i => i.complete)) { const r = performance.getEntriesByType('resource'); const list = r.find(e => e.name.includes('/v1/images?')); const sess = r.find(e => e.name.includes('/admin/api/session')); done([painted, performance.now(), v.length, document.querySelectorAll('.grid li').length, list ? list.duration : -1, sess ? sess.responseEnd : -1]); } else setTimeout(check, 10); };
                 check();",
            )
            .await;
        let a = t.as_array().unwrap();
        runs.push((
            a[0].as_f64().unwrap(),
            a[1].as_f64().unwrap(),
            a[2].as_u64().unwrap(),
            a[3].as_u64().unwrap(),
            a[4].as_f64().unwrap(),
            a[5].as_f64().unwrap(),
        ));
    }
    let painted: Vec<String> = runs.iter().map(|r| format!("{:.0}", r.0)).collect();
    let loaded: Vec<String> = runs.iter().map(|r| format!("{:.0}", r.1)).collect();
    let listing: Vec<String> = runs.iter().map(|r| format!("{:.0}", r.4)).collect();
    let session: Vec<String> = runs.iter().map(|r| format!("{:.0}", r.5)).collect();
    let mut sorted = runs.clone();
    sorted.sort_by(|x, y| x.0.total_cmp(&y.0));
    let med = sorted[sorted.len() / 2];
    println!(
        "library first screen over {n} images (seeded in {:.1} s), ms from navigation start: \
         painted {} (median {:.0}); thumbnails in view loaded {}; session answered at {}; \
         GET /v1/images took {}; {} thumbnails in view, {} tiles",
        seeded.as_secs_f64(),
        painted.join(" "),
        med.0,
        loaded.join(" "),
        session.join(" "),
        listing.join(" "),
        med.2,
        med.3
    );
    b.screenshot("bench-library-100k").await;
    b.quit().await;
    app.cleanup().await;
}

/// Copies image `id`'s row `n` times into the SQLite database (new ids, one second apart).
async fn seed_copies(app: &App, id: &str, n: usize) {
    use sqlx::{Connection, Row};
    let url = format!("sqlite:{}", app.data_dir.join("flexphoto.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("PRAGMA busy_timeout = 10000")
        .execute(&mut conn)
        .await
        .unwrap();
    let cols: Vec<String> = sqlx::query("SELECT name FROM pragma_table_info('images')")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect();
    let uuid = uuid::Uuid::parse_str(id).unwrap();
    let uploaded: String = sqlx::query("SELECT uploaded_at FROM images WHERE id = $1")
        .bind(uuid)
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    let suffix = if uploaded.ends_with('Z') {
        "Z"
    } else {
        "+00:00"
    };
    let select: Vec<String> = cols
        .iter()
        .map(|c| match c.as_str() {
            "id" => "$1".to_owned(),
            "uploaded_at" | "created_at" | "updated_at" => "$2".to_owned(),
            "sha256" | "upload_key" | "upload_identity" => "NULL".to_owned(),
            other => other.to_owned(),
        })
        .collect();
    let sql = format!(
        "INSERT INTO images ({}) SELECT {} FROM images WHERE id = $3",
        cols.join(", "),
        select.join(", ")
    );
    let base = chrono::Utc::now() - chrono::Duration::seconds(n as i64 + 10);
    let mut tx = conn.begin().await.unwrap();
    for i in 0..n {
        let t = base + chrono::Duration::seconds(i as i64);
        let t = format!("{}{suffix}", t.format("%Y-%m-%dT%H:%M:%S%.6f"));
        sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(uuid::Uuid::new_v4())
            .bind(t)
            .bind(uuid)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}
