//! Several control-plane processes on one database and one object store: jobs run once,
//! deployment-wide roles stay single and move to a survivor, search answers the same through
//! every process, and the embedded index never silently splits.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{
    drop_pg_db, ensure_bucket, fresh_pg_db, jpeg, models, s3_env, sample, App, Backend, Options,
    ADMIN,
};

/// The process (index into `apps`) holding `role`, per `GET /v1/cluster` asked of `via`.
async fn holder_of(apps: &[App], via: &App, role: &str) -> Option<usize> {
    let (s, v) = via.get_json("/v1/cluster", ADMIN).await;
    assert_eq!(s, 200, "{v}");
    let r = v["roles"]
        .as_array()?
        .iter()
        .find(|r| r["role"] == role && r["live"] == true)?
        .clone();
    let url = r["holder"]["url"].as_str()?;
    apps.iter().position(|a| a.base == url)
}

/// Waits until `role` is held by a live process other than `not`; returns it.
async fn wait_for_holder(apps: &[App], via: &App, role: &str, not: Option<usize>) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(h) = holder_of(apps, via, role).await {
            if Some(h) != not {
                return h;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no survivor took the {role} role; cluster: {}",
            via.get_json("/v1/cluster", ADMIN).await.1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The ids and scores of a text search through `app`.
async fn search_through(app: &App) -> Vec<(String, String)> {
    let (s, v) = app
        .post_json(
            "/v1/search",
            ADMIN,
            &json!({"text": "a colourful photo", "limit": 50}),
        )
        .await;
    assert_eq!(s, 200, "search through {}: {v}", app.base);
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["id"].as_str().unwrap().to_owned(),
                format!("{:.4}", h["score"].as_f64().unwrap_or(0.0)),
            )
        })
        .collect()
}

/// Three processes with one embedded-index owner and two that forward search to it.
#[tokio::test]
async fn three_processes_with_one_embedded_index_owner() {
    three_processes(None).await;
}

/// Three processes sharing one Qdrant server.
#[tokio::test]
async fn three_processes_on_a_qdrant_server() {
    match std::env::var("QDRANT_URL").ok().filter(|u| !u.is_empty()) {
        Some(url) => three_processes(Some(url)).await,
        None => crate::skip::skip("qdrant", "QDRANT_URL is not set"),
    }
}

/// Three processes on one Postgres database and one S3 bucket, their index on the Qdrant
/// server at `qdrant`, or else one embedded-index owner and two forwarding processes.
/// Uploads go through all three while the process holding the sweeper role is killed with
/// SIGKILL and restarted: every accepted upload ends ready with one finished job, the role
/// moves to a survivor, and search answers the same through every process.
async fn three_processes(qdrant: Option<String>) {
    let Some(models) = models() else { return };
    if std::env::var("FLEXPHOTO_TEST_PG_URL").is_err() {
        crate::skip::skip(
            "postgres",
            "FLEXPHOTO_TEST_PG_URL is not set; the multi-process test needs Postgres",
        );
        return;
    }
    if s3_env().is_none() {
        crate::skip::skip(
            "s3",
            "FLEXPHOTO_TEST_S3_* is not set; the multi-process test needs S3",
        );
        return;
    }
    ensure_bucket().await;
    let (db_url, db_name) = fresh_pg_db().await;
    let collection = format!("scale_{}", uuid::Uuid::new_v4().simple());
    let mut apps = Vec::new();
    for i in 0..3 {
        let mut opts = Options::new(Backend::Postgres)
            .shared_database(&db_url)
            .with_search(&models)
            .env("FLEXPHOTO__CLUSTER__LEASE_SECS", "3")
            .env("FLEXPHOTO__QUEUE__LEASE_SECS", "5")
            .env("FLEXPHOTO__QUEUE__WORKERS", "2")
            .env("FLEXPHOTO__UPLOAD__SWEEP_INTERVAL_SECS", "1");
        opts.s3 = true;
        opts = match &qdrant {
            Some(url) => opts
                .env("FLEXPHOTO__SEARCH__INDEX", "server")
                .env("FLEXPHOTO__SEARCH__QDRANT_URL", url.clone())
                .env("FLEXPHOTO__SEARCH__QDRANT_COLLECTION", collection.clone()),
            None if i == 0 => opts,
            None => opts.env("FLEXPHOTO__SEARCH__INDEX", "forward"),
        };
        apps.push(App::spawn(opts).await);
    }
    let sweeper = wait_for_holder(&apps, &apps[0], "sweeper", None).await;
    let mut ids = Vec::new();
    let n = 12u32;
    for seed in 0..n {
        if seed == 5 {
            // Kill the process while it is running a job (uploading to it until one runs),
            // so that the crash cuts into work another process must take over.
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let mut extra = 0;
            while sample(
                &apps[sweeper].metrics().await,
                "flexphoto_jobs_in_progress{kind=\"process\"}",
            ) < 1.0
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the process never ran a job"
                );
                let (s, v) = apps[sweeper]
                    .upload(ADMIN, "pat", "p.jpg", &jpeg(1600, 1200, 950 + extra))
                    .await;
                assert_eq!(s, 201, "{v}");
                ids.push(v["id"].as_str().unwrap().to_owned());
                extra += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            apps[sweeper].kill9();
        }
        let target = seed as usize % 3;
        if target == sweeper && (5..9).contains(&seed) {
            continue; // the killed process takes no uploads until it is back
        }
        let (s, v) = apps[target]
            .upload(ADMIN, "pat", "p.jpg", &jpeg(900, 600, 900 + seed))
            .await;
        assert_eq!(s, 201, "{v}");
        ids.push(v["id"].as_str().unwrap().to_owned());
        if seed == 8 {
            let survivor = (sweeper + 1) % 3;
            let moved = wait_for_holder(&apps, &apps[survivor], "sweeper", Some(sweeper)).await;
            assert_ne!(moved, sweeper);
            apps[sweeper].start();
        }
    }
    for id in &ids {
        let img = apps[0].wait_done(id, Duration::from_secs(240)).await;
        assert_eq!(img["status"], "ready", "{img}");
    }
    // The job the kill cut into was taken over: it finished on a later attempt.
    if let Err(done) = apps[1].a_process_job_was_retried().await {
        panic!("no process job was taken over after the kill: {done}");
    }
    // Every accepted upload was processed by exactly one finished job.
    let (_, stats) = apps[1].get_json("/v1/jobs/stats", ADMIN).await;
    let process = &stats["queue"]["by_kind"]["process"];
    assert_eq!(process["done"].as_u64(), Some(ids.len() as u64), "{stats}");
    assert!(
        process["dead"].is_null() && process["queued"].is_null(),
        "{stats}"
    );
    // Every role is held by exactly one live process, and all three agree on who.
    let (_, c0) = apps[0].get_json("/v1/cluster", ADMIN).await;
    for app in &apps[1..] {
        let (_, c) = app.get_json("/v1/cluster", ADMIN).await;
        let holders = |v: &Value| -> Vec<(String, String)> {
            v["roles"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (r["role"].to_string(), r["holder"]["id"].to_string()))
                .collect()
        };
        assert_eq!(holders(&c), holders(&c0));
    }
    // Each role is live and held by one of the running processes (not the killed instance),
    // and the role metric says the same: 1 in that process, 0 in the others.
    let mut ids_now = Vec::new();
    let mut pages = Vec::new();
    for app in &apps {
        ids_now.push(app.get_json("/v1/cluster", ADMIN).await.1["this"]["id"].clone());
        pages.push(app.metrics().await);
    }
    let roles = c0["roles"].as_array().unwrap();
    assert!(
        roles.iter().any(|r| r["role"] == "sweeper"),
        "no sweeper role: {c0}"
    );
    for r in roles {
        let role = r["role"].as_str().unwrap();
        assert_eq!(r["live"], true, "{role} lapsed: {c0}");
        let h = ids_now
            .iter()
            .position(|id| *id == r["holder"]["id"])
            .unwrap_or_else(|| panic!("{role} is held by no running process: {c0}"));
        for (i, page) in pages.iter().enumerate() {
            let held = sample(
                page,
                &format!("flexphoto_cluster_role_held{{role=\"{role}\"}}"),
            );
            assert_eq!(
                held,
                if i == h { 1.0 } else { 0.0 },
                "flexphoto_cluster_role_held for {role} in process {i}; /v1/cluster names process {h}"
            );
        }
    }
    // Search through any process returns the same results, with every image in them.
    let first = search_through(&apps[0]).await;
    let found: HashSet<&String> = first.iter().map(|(id, _)| id).collect();
    for id in &ids {
        assert!(
            found.contains(id),
            "{id} missing from search through the first process"
        );
    }
    for app in &apps[1..] {
        assert_eq!(
            search_through(app).await,
            first,
            "search through {} differs",
            app.base
        );
    }
    for app in apps {
        app.cleanup().await;
    }
    drop_pg_db(&db_name).await;
}

/// A second process with an embedded index on the same database refuses to start and names
/// the owner; when the owner dies, the second process takes over once the lease lapses and
/// rebuilds its index from the database (re-embedding from stored variants).
#[tokio::test]
async fn the_embedded_index_has_one_owner_per_database() {
    let Some(models) = models() else { return };
    let shared = std::env::temp_dir().join(format!("flexphoto-shared-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&shared).unwrap();
    let db = format!("sqlite:{}", shared.join("shared.db").display());
    let opts = || {
        Options::new(Backend::Sqlite)
            .shared_database(&db)
            .with_search(&models)
            .env("FLEXPHOTO__CLUSTER__LEASE_SECS", "3")
            .env(
                "FLEXPHOTO__STORAGE__DIR",
                shared.join("objects").display().to_string(),
            )
    };
    let mut owner = App::spawn(opts()).await;
    let (s, v) = owner
        .upload(ADMIN, "quin", "a.jpg", &jpeg(640, 480, 4242))
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(
        owner.wait_done(&id, Duration::from_secs(120)).await["status"],
        "ready"
    );
    let mut second = App::prepare(opts()).await;
    let log = second
        .try_start()
        .expect_err("a second embedded index owner must be refused");
    assert!(log.contains("owned by another process"), "{log}");
    assert!(
        log.contains(&format!("pid {}", owner_pid(&owner).await)),
        "the error must name the owner: {log}"
    );
    assert!(log.contains("search.index = \"server\""), "{log}");
    assert!(log.contains("\"forward\""), "{log}");
    // The owner dies; after its lease lapses the second process owns the index and has
    // rebuilt it from the database.
    owner.kill9();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match second.try_start() {
            Ok(()) => break,
            Err(log) => {
                assert!(log.contains("owned by another process"), "{log}");
                assert!(Instant::now() < deadline, "never took over: {log}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (s, v) = second
            .post_json(
                "/v1/search",
                ADMIN,
                &json!({"text": "a photo", "limit": 10}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        if v["items"]
            .as_array()
            .is_some_and(|a| a.iter().any(|h| h["id"] == id))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new owner never indexed {id}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    second.cleanup().await;
    owner.cleanup().await;
    let _ = std::fs::remove_dir_all(&shared);
}

async fn owner_pid(app: &App) -> u64 {
    let (_, v) = app.get_json("/v1/cluster", ADMIN).await;
    v["this"]["pid"].as_u64().unwrap()
}
